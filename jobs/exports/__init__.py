"""What partners pull: per-partner segment exports (`ROOT/exports/PARTNER_ID/SEGMENT/RUN_DATE/`).

    keys.py         which keys each partner gets (only those it supplied itself) and their recipe: pure
    parts.py        the part files and the manifest of one export: pure
    distributed.py  keys joined with the members and written as staged parts, on Ray
    partners.py     the tools around published exports: listing, presigned URLs, S3 bucket policies

The export stage itself is `jobs.stages.export`; the folders are published manifest-last
(`jobs.storage.folders`).
"""
