"""The tools around published exports: what a partner has, presigned URLs to pull it, its S3 bucket policy.

Only published exports count (folders with a manifest, `jobs.storage.folders`); every partner id and
segment name is validated before a path or a policy prefix is built from it (`jobs.run.naming`).
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from jobs.config import StorageConfig
from jobs.errors import UserError
from jobs.run.layout import ExportLayout
from jobs.run.naming import validate_partner_id, validate_run_date, validate_segment_name
from jobs.storage import bucket_of, is_s3, join, key_of, presigned_url, published_folders, published_manifest

_PRINCIPAL = re.compile(r"^(\d{12}|arn:aws[a-z-]*:iam::\d{12}:(root|(user|role)/[A-Za-z0-9+=,.@_/-]{1,512}))$")


def _published(layout: ExportLayout, partner: str, storage: StorageConfig) -> list[tuple[str, str]]:
    """(segment, run date) of every published export of the partner, sorted."""
    found = []
    for parts in published_folders(layout.partner_dir(partner), ExportLayout.MANIFEST, storage):
        if len(parts) != 2:
            continue
        segment, run_date = parts
        try:
            found.append((validate_segment_name(segment), validate_run_date(run_date)))
        except UserError:  # not a folder an export writes: not an export
            continue
    return sorted(found)


def list_exports(root: str, partner: str, storage: StorageConfig) -> list[dict[str, Any]]:
    """The partner's published exports: segment, run date, rows, run id, model version, parts, folder."""
    layout = ExportLayout(root)
    validate_partner_id(partner)
    out = []
    for segment, run_date in _published(layout, partner, storage):
        folder = layout.export_dir(partner, segment, run_date)
        manifest = published_manifest(folder, ExportLayout.MANIFEST, storage)
        if manifest is None:  # replaced between the listing and now
            continue
        out.append(
            {
                "segment": segment,
                "run_date": run_date,
                "rows": manifest.get("rows"),
                "run_id": manifest.get("run_id"),
                "model_version": manifest.get("model_version"),
                "parts": len(manifest.get("parts", [])),
                "path": folder,
            }
        )
    return out


def exported_partners(root: str, storage: StorageConfig) -> list[str]:
    """Partners with at least one published export under ROOT."""
    return sorted({parts[0] for parts in published_folders(ExportLayout(root).base, ExportLayout.MANIFEST, storage)})


def run_date_exports(root: str, run_date: str, storage: StorageConfig) -> dict[str, dict[str, Any]]:
    """{export folder: its manifest} of every published export of `run_date` under ROOT (any partner, any
    segment): what one run owns, and what another run of that date must not overwrite unless told to."""
    layout = ExportLayout(root)
    validate_run_date(run_date)
    folders = []
    for parts in published_folders(layout.base, ExportLayout.MANIFEST, storage):
        if len(parts) != 3 or parts[2] != run_date:
            continue
        try:
            folders.append(layout.export_dir(*parts))
        except UserError:  # not a folder an export writes: not an export
            continue
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(folders)))) as pool:  # one GET each on S3
        manifests = pool.map(lambda folder: published_manifest(folder, ExportLayout.MANIFEST, storage), folders)
        # a manifest torn or replaced meanwhile: nobody's
        return {folder: manifest for folder, manifest in zip(folders, manifests) if manifest is not None}


def presigned_urls(
    root: str, partner: str, segment: str, storage: StorageConfig, expires_seconds: int
) -> dict[str, Any]:
    """Presigned GET URLs for every part and the manifest of the partner's latest export of a segment."""
    layout = ExportLayout(root)
    validate_partner_id(partner)
    validate_segment_name(segment)
    if not is_s3(root):
        raise UserError(f"presigned URLs need an s3:// exports root, not {root!r}.")
    dates = [run_date for seg, run_date in _published(layout, partner, storage) if seg == segment]
    manifest = None
    while dates and manifest is None:  # the latest that is still published when read
        run_date = dates.pop()
        manifest = published_manifest(layout.export_dir(partner, segment, run_date), ExportLayout.MANIFEST, storage)
    if manifest is None:
        raise UserError(f"partner {partner!r} has no published export of segment {segment!r} under {root}.")
    folder = layout.export_dir(partner, segment, run_date)
    return {
        "partner_id": partner,
        "segment": segment,
        "run_date": run_date,
        "rows": manifest.get("rows"),
        "expires_seconds": expires_seconds,
        "manifest": presigned_url(layout.manifest(partner, segment, run_date), storage, expires_seconds),
        "parts": [
            {
                "path": part["path"],
                "rows": part["rows"],
                "sha256": part["sha256"],
                "url": presigned_url(join(folder, part["path"]), storage, expires_seconds),
            }
            for part in manifest.get("parts", [])
        ],
    }


def bucket_policy(root: str, partner: str, principal: str) -> dict[str, Any]:
    """S3 bucket policy statements for the platform team: the partner may read and list its own prefix only."""
    layout = ExportLayout(root)
    validate_partner_id(partner)
    if not is_s3(root):
        raise UserError(f"bucket policies need an s3:// exports root, not {root!r}.")
    if not isinstance(principal, str) or not _PRINCIPAL.match(principal):
        raise UserError(
            f"principal {principal!r} is not an AWS account id or IAM ARN "
            "(e.g. arn:aws:iam::123456789012:role/partner-reader or 123456789012)."
        )
    bucket = bucket_of(root)
    key_prefix = key_of(layout.partner_dir(partner)) + "/"
    aws_principal = f"arn:aws:iam::{principal}:root" if principal.isdigit() else principal
    sid = re.sub(r"[^A-Za-z0-9]", "", partner.title())
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": f"Read{sid}Exports",
                "Effect": "Allow",
                "Principal": {"AWS": aws_principal},
                "Action": ["s3:GetObject"],
                "Resource": [f"arn:aws:s3:::{bucket}/{key_prefix}*"],
            },
            {
                "Sid": f"List{sid}Exports",
                "Effect": "Allow",
                "Principal": {"AWS": aws_principal},
                "Action": ["s3:ListBucket"],
                "Resource": [f"arn:aws:s3:::{bucket}"],
                "Condition": {"StringLike": {"s3:prefix": [key_prefix, f"{key_prefix}*"]}},
            },
        ],
    }
