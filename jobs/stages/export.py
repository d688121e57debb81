"""Export stage: every partner's members of every scored segment, as files the partner pulls.

    ROOT/exports/PARTNER_ID/SEGMENT/RUN_DATE/part-*.parquet + manifest.json      (jobs.run.layout.ExportLayout)

ROOT is `export.root`, else the run's own ROOT (`ExportView`); RUN_DATE is the run's date (`RunIdentity`);
the segments and their model versions are what the score stage scored (the scores table's marker). A
partner's export holds only keys it supplied itself (`jobs.exports.keys`). Workers stage the parts under
`ROOT/exports/_staging/RUN_ID/` (`jobs.exports.distributed`); then every export folder is published
manifest-last (`jobs.storage.folders`): a reader sees the old export, none, or the new one whole, and a
rerun of the same run replaces it, never duplicates.

The exports of a run date belong to one run (the run id in their manifests). A run with another run id stops
before reading anything (exit 2, naming the owner) unless `export.replace` lets it replace them; then the
owner's folders this run does not write go too, so partners never see two runs mixed under one date.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from jobs.config import ExportView
from jobs.errors import UserError
from jobs.exports.distributed import (
    keys_distributed,
    partners_distributed,
    stage_empty_part,
    stage_parts_distributed,
)
from jobs.exports.parts import manifest, part_name
from jobs.run.layout import ExportLayout
from jobs.run.naming import validate_partner_id, validate_segment_name
from jobs.run.stage import PartnerExports, RunIdentity
from jobs.storage import (
    FolderRelease,
    TableIn,
    check_bucket,
    delete,
    join,
    new_write_id,
    publish_folders,
    remove_empty_folder,
)

log = logging.getLogger(__name__)


def run(
    view: ExportView, identity: RunIdentity, scores: TableIn, identity_map: TableIn, exports: PartnerExports
) -> dict[str, Any]:
    storage = exports.storage
    layout = ExportLayout(view.root)
    check_bucket(view.root, storage)
    run_date = identity.run_date.isoformat()
    replaced = foreign_exports(exports, identity, view.replace)
    segments = scored_segments(scores)
    write_id = new_write_id()
    staging_run = join(layout.staging, identity.run_id)
    staging = join(staging_run, write_id)
    delete(staging_run, storage)  # what an earlier, failed attempt of this run left

    keys = keys_distributed(identity_map)
    partners = partners_distributed(keys)
    for partner in partners:  # before any path is built from them
        try:
            validate_partner_id(partner)
        except UserError as exc:
            raise UserError(
                f"identity_map {identity_map.path} holds a partner id that cannot be exported: {exc}"
            ) from None
    staged = stage_parts_distributed(keys, scores, staging, storage, view.num_partitions, view.reasons)

    by_export: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for part in staged:
        by_export.setdefault((part["partner_id"], part["segment"]), []).append(part)
    created_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    releases = []
    for partner in partners:
        for segment, model_version in sorted(segments.items()):
            parts = by_export.get((partner, segment)) or [
                stage_empty_part(staging, partner, segment, storage, view.reasons)
            ]
            named = [
                {**p, "path": part_name(i, write_id), "staged": p["path"]}
                for i, p in enumerate(sorted(parts, key=lambda p: p["path"]))
            ]
            releases.append(
                FolderRelease(
                    folder=layout.export_dir(partner, segment, run_date),
                    manifest_name=ExportLayout.MANIFEST,
                    manifest=manifest(
                        run_id=identity.run_id,
                        run_date=run_date,
                        partner_id=partner,
                        segment=segment,
                        model_version=model_version,
                        write_id=write_id,
                        created_at=created_at,
                        membership=view.membership,
                        parts=named,
                        reasons=view.reasons,
                    ),
                    files={p["path"]: p["staged"] for p in named},
                )
            )
    publish_folders(releases, storage)
    written = {r.folder for r in releases}
    for folder in sorted(set(replaced) - written):  # the replaced run's exports this run has no rows for
        delete(join(folder, ExportLayout.MANIFEST), storage)  # manifest first: readers skip the folder
        delete(folder, storage)
    if replaced:
        log.warning(
            "replaced the exports of run %s for run date %s (%d folder(s)); partners now read run %s",
            ", ".join(sorted(set(replaced.values()))),
            run_date,
            len(replaced),
            identity.run_id,
        )
    delete(staging_run, storage)
    remove_empty_folder(layout.staging, storage)

    exports = [
        {
            "partner_id": r.manifest["partner_id"],
            "segment": r.manifest["segment"],
            "rows": r.manifest["rows"],
            "parts": len(r.files),
            "path": r.folder,
        }
        for r in releases
    ]
    log.info(
        "exported %d segment(s) to %d partner(s) under %s (run date %s)",
        len(segments),
        len(partners),
        layout.base,
        run_date,
    )
    return {
        "run_date": run_date,
        "root": view.root,
        "partners": len(partners),
        "segments": sorted(segments),
        "exports": exports,
        "rows_out": sum(e["rows"] for e in exports),
    }


def foreign_exports(exports: PartnerExports, identity: RunIdentity, replace: bool) -> dict[str, str]:
    """{folder: owner run id} of the run date's exports another run wrote; refused unless `replace`."""
    foreign = {folder: owner for folder, owner in exports.owners().items() if owner != identity.run_id}
    if foreign and not replace:
        owners = ", ".join(sorted(set(foreign.values())))
        raise UserError(
            f"the exports of run date {exports.run_date} under {ExportLayout(exports.root).base} belong to run "
            f"{owners} ({len(foreign)} folder(s), e.g. {min(foreign)}), not to run {identity.run_id}. Run it "
            f"with run id {owners} to redo that run, or replace its exports with `--replace` "
            "(export.replace: true in the config)."
        )
    return foreign


def scored_segments(scores: TableIn) -> dict[str, str]:
    """{segment: model version} of what the score stage scored (skipped segments are not exported)."""
    scored = scores.marker.get("segments")
    if scored is None:
        raise UserError(
            f"the scores table {scores.path} does not say which segments it scored (no 'segments' in its "
            "marker): it was written by an older version; run the score stage again."
        )
    return {validate_segment_name(name): version or "" for name, version in scored.items()}
