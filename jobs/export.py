"""Export stage: per-partner segment files that partners pull, and the tools to hand them out.

Layout: `ROOT/exports/PARTNER_ID/SEGMENT/RUN_DATE/part-*.parquet` + `manifest.json`, columns
`key_type, key, score, percentile`. RUN_DATE is the run's date: `config.run_date` (the pipeline sets it),
else the date the pipeline recorded in `RUN/_stages/run.json`, else the as_of of the scored features. A folder is an export only once its manifest is there: readers
(`list_exports`, `presigned_urls`, partners) trust only folders with a manifest, and the manifest lists
every part with its row count and sha256.

Isolation. A partner's export holds only member personas the partner has seen, keyed only by identifiers
that the partner gave us itself:
  * `customer_id` / `subscriber_id`: identity_map rows scoped to that partner (`partner_id` = the partner);
  * `email_sha256` / `phone_sha256`: sha256 hex of the normalised email / E.164 phone, only for identity_map
    rows whose `seen_at_partners` holds the partner (the partner sent that very email or phone).
Nothing else: no persona ids, no device ids, no other partner's ids or contact details, even when the
persona is shared. A persona the partner never saw has no key for it and so never reaches its export.

Distributed: identity_map rows become (persona_id, partner_id, key_type, key) rows in a map, are joined
with the member scores by Ray Data (hash join, `config.ray.num_partitions`), and every joined block writes
one Parquet part per (partner, segment) it holds into a staging prefix (`ROOT/exports/_staging/RUN_ID/...`),
returning the part's rows and sha256. The driver only sees that file list.

Publishing, per (partner, segment): remove the folder's manifest (the export disappears for readers), then
its old parts, copy the staged parts in (names carry the write id), write manifest.json LAST. A failure
anywhere before the manifest leaves a folder without one (ignored by readers); a rerun of the same run
clears its staging prefix and the folder, so it replaces and never duplicates.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io as _io
import json
import logging
import os
import posixpath
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from jobs import io
from jobs.config import JobConfig, StorageConfig
from jobs.errors import UserError
from jobs.run.naming import validate_partner_id, validate_run_date, validate_segment_name
from jobs.raykit.session import ray_session

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
STAGING = "_staging"
FORMAT_VERSION = 1

EXPORT_SCHEMA = pa.schema(
    [("key_type", pa.string()), ("key", pa.string()), ("score", pa.float64()), ("percentile", pa.float64())]
)
KEYS_SCHEMA = pa.schema(
    [("persona_id", pa.string()), ("partner_id", pa.string()), ("key_type", pa.string()), ("key", pa.string())]
)
_PART_SCHEMA = pa.schema(
    [("partner_id", pa.string()), ("segment", pa.string()), ("path", pa.string()), ("rows", pa.int64()),
     ("bytes", pa.int64()), ("sha256", pa.string())]
)

KEY_TYPES = {
    "customer_id": "the partner's own customer id, as the partner sent it",
    "subscriber_id": "the partner's own subscriber id, as the partner sent it",
    "email_sha256": "sha256 hex of the normalised email (trimmed, lowercased) that this partner sent",
    "phone_sha256": "sha256 hex of the normalised phone (E.164, e.g. +4915112345678) that this partner sent",
}
_SCOPED_TYPES = {"customer": "customer_id", "subscriber": "subscriber_id"}
_CONTACT_TYPES = {"email": "email_sha256", "phone": "phone_sha256"}


# ------------------------------------------------------------------------------------------- paths


def exports_base(root: str) -> str:
    return io.join(root, "exports")


def export_dir(root: str, partner_id: str, segment: str, run_date: str) -> str:
    """ROOT/exports/PARTNER/SEGMENT/RUN_DATE, after checking each component."""
    return io.join(exports_base(root), validate_partner_id(partner_id), validate_segment_name(segment),
                   validate_run_date(run_date))


def _root(config: JobConfig) -> str:
    root = config.export.root
    if not root:
        raise UserError("no exports root: pass --to/--root ROOT (a local folder or s3://bucket/prefix) or set export.root.")
    if root.startswith("s3://") and len(root) <= len("s3://"):
        raise UserError(f"exports root {root!r} names no bucket.")
    return root.rstrip("/") or root


def _fs_path(path: str) -> str:
    return path[len("s3://"):] if io.is_s3(path) else path


# ----------------------------------------------------------------------------------- partner keys


def sha256_hex(values: pa.Array) -> pa.Array:
    """sha256 hex digest of every string (UTF-8)."""
    return pa.array([hashlib.sha256(v.encode("utf-8")).hexdigest() for v in values.to_pylist()], pa.string())


def partner_keys(batch: pa.Table) -> pa.Table:
    """identity_map rows -> (persona_id, partner_id, key_type, key): the keys each partner gave us itself.

    A customer / subscriber id goes to its own (scoping) partner only, and not at all when the partners
    that carried it do not include that partner (inconsistent rows are dropped, never re-routed). An email /
    phone goes, hashed, to each partner in its seen_at_partners and to no other.
    """
    n = batch.num_rows
    if n == 0:
        return KEYS_SCHEMA.empty_table()
    id_type = batch.column("identifier_type").to_numpy(zero_copy_only=False)
    scope = batch.column("partner_id").to_numpy(zero_copy_only=False)
    seen = batch.column("seen_at_partners")
    if isinstance(seen, pa.ChunkedArray):
        seen = seen.combine_chunks()
    flat = pc.list_flatten(seen).to_numpy(zero_copy_only=False)
    parent = pc.list_parent_indices(seen).to_numpy().astype(np.int64)
    seen_count = np.bincount(parent, minlength=n) if len(parent) else np.zeros(n, dtype=np.int64)
    has_identity = pc.and_(pc.is_valid(batch.column("persona_id")), pc.is_valid(batch.column("identifier")))
    has_identity = has_identity.to_numpy(zero_copy_only=False)
    out = []

    # customer / subscriber: keyed for the scoping partner only.
    scope_listed = np.zeros(n, dtype=bool)
    if len(parent):
        scope_listed[parent[(flat == scope[parent]) & (flat != None)]] = True  # noqa: E711 (object arrays)
    for source, key_type in _SCOPED_TYPES.items():
        take = (id_type == source) & (scope != None) & has_identity & (scope_listed | (seen_count == 0))  # noqa: E711
        rows = pa.array(np.flatnonzero(take))
        if len(rows) == 0:
            continue
        out.append(pa.table({
            "persona_id": batch.column("persona_id").take(rows),
            "partner_id": batch.column("partner_id").take(rows),
            "key_type": pa.repeat(key_type, len(rows)),
            "key": batch.column("identifier").take(rows),
        }, schema=KEYS_SCHEMA))

    # email / phone: hashed, one row per partner that sent it.
    for source, key_type in _CONTACT_TYPES.items():
        if not len(parent):
            break
        pick = np.flatnonzero((id_type[parent] == source) & has_identity[parent] & (flat != None))  # noqa: E711
        if len(pick) == 0:
            continue
        parents = parent[pick]
        rows = np.unique(parents)
        digest = np.full(n, None, dtype=object)
        digest[rows] = sha256_hex(batch.column("identifier").take(pa.array(rows))).to_numpy(zero_copy_only=False)
        out.append(pa.table({
            "persona_id": batch.column("persona_id").take(pa.array(parents)),
            "partner_id": pa.array(flat[pick], pa.string()),
            "key_type": pa.repeat(key_type, len(parents)),
            "key": pa.array(digest[parents], pa.string()),
        }, schema=KEYS_SCHEMA))
    return pa.concat_tables(out) if out else KEYS_SCHEMA.empty_table()


def _partners_of_block(batch: pa.Table) -> pa.Table:
    values = pc.unique(batch.column("partner_id")) if batch.num_rows else pa.array([], pa.string())
    return pa.table({"partner_id": values.cast(pa.string())})


def _members(batch: pa.Table) -> pa.Table:
    members = batch.filter(pc.fill_null(batch.column("member"), False))
    return members.select(["persona_id", "segment", "score", "percentile"])


# ------------------------------------------------------------------------------------ writing parts


def _write_parts(batch: pa.Table, staging: str, storage: StorageConfig) -> pa.Table:
    """One joined block -> one staged Parquet part per (partner, segment) in it; returns rows and sha256."""
    if batch.num_rows == 0:
        return _PART_SCHEMA.empty_table()
    fs, _ = io.filesystem_for(staging, storage)
    out = []
    groups = batch.group_by(["partner_id", "segment"]).aggregate([]).to_pylist()
    for group in groups:
        partner, segment = group["partner_id"], group["segment"]
        # path components come from data: refuse anything that is not a plain name
        validate_partner_id(partner)
        validate_segment_name(segment)
        mask = pc.and_(pc.equal(batch.column("partner_id"), partner), pc.equal(batch.column("segment"), segment))
        part = batch.filter(mask).select(EXPORT_SCHEMA.names).cast(EXPORT_SCHEMA)
        # one row per key (a key names one persona; max() only guards against a duplicated identity row)
        part = part.group_by(["key_type", "key"]).aggregate([("score", "max"), ("percentile", "max")])
        part = part.select(["key_type", "key", "score_max", "percentile_max"])
        part = part.rename_columns(EXPORT_SCHEMA.names).cast(EXPORT_SCHEMA)
        part = part.sort_by([("key_type", "ascending"), ("key", "ascending")])
        buffer = _io.BytesIO()
        pq.write_table(part, buffer, compression="zstd")
        data = buffer.getvalue()
        path = io.join(staging, partner, segment, f"part-{uuid.uuid4().hex}.parquet")
        fs.create_dir(_fs_path(posixpath.dirname(path)), recursive=True)
        with fs.open_output_stream(_fs_path(path)) as sink:
            sink.write(data)
        out.append({"partner_id": partner, "segment": segment, "path": path, "rows": part.num_rows,
                    "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    return pa.Table.from_pylist(out, schema=_PART_SCHEMA)


def _empty_part(staging: str, partner: str, segment: str, storage: StorageConfig) -> dict[str, Any]:
    buffer = _io.BytesIO()
    pq.write_table(EXPORT_SCHEMA.empty_table(), buffer, compression="zstd")
    data = buffer.getvalue()
    path = io.join(staging, partner, segment, f"part-{uuid.uuid4().hex}.parquet")
    io.write_bytes(path, data, storage)
    return {"partner_id": partner, "segment": segment, "path": path, "rows": 0, "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest()}


# ----------------------------------------------------------------------------------------- publish


def _after_parts(final_dir: str) -> None:
    """Called between copying the parts into place and writing the manifest (tests inject failures here)."""


def _write_manifest(path: str, manifest: dict[str, Any], storage: StorageConfig) -> None:
    data = json.dumps(manifest, indent=2, sort_keys=True).encode()
    if io.is_s3(path):
        io.write_bytes(path, data, storage)  # one PUT: visible whole or not at all
        return
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "wb") as handle:  # local: write aside, fsync, rename over (atomic on POSIX)
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def publish_export(
    final_dir: str,
    parts: list[dict[str, Any]],
    manifest: dict[str, Any],
    storage: StorageConfig,
    write_id: str,
) -> dict[str, Any]:
    """Replace the export in `final_dir` by the staged parts; the manifest is the last thing written."""
    fs, final = io.filesystem_for(final_dir, storage)
    manifest_path = io.join(final_dir, MANIFEST)
    # 1. the old manifest goes first: from here on readers ignore the folder
    if fs.get_file_info(_fs_path(manifest_path)).type != pafs.FileType.NotFound:
        fs.delete_file(_fs_path(manifest_path))
    # 2. old parts (an earlier write of this run date, or a failed attempt) go next
    if fs.get_file_info(final).type == pafs.FileType.Directory:
        fs.delete_dir_contents(final)
    fs.create_dir(final, recursive=True)
    # 3. the new parts, named after the write
    listed = []
    for i, part in enumerate(sorted(parts, key=lambda p: p["path"])):
        name = f"part-{i:05d}-{write_id}.parquet"
        src, dst = _fs_path(part["path"]), posixpath.join(final, name)
        if io.is_s3(final_dir):
            fs.copy_file(src, dst)  # server-side copy
        else:
            fs.move(src, dst)
        listed.append({"path": name, "rows": part["rows"], "bytes": part["bytes"], "sha256": part["sha256"]})
    _after_parts(final_dir)
    # 4. the manifest, last
    manifest = {**manifest, "parts": listed, "rows": sum(p["rows"] for p in listed)}
    _write_manifest(manifest_path, manifest, storage)
    return manifest


# --------------------------------------------------------------------------------------------- stage


def export_run_date(config: JobConfig, run_dir: str, scores_marker: dict[str, Any]) -> str:
    """RUN_DATE: the configured run date, else the one the pipeline recorded, else the features' as_of."""
    configured = getattr(config, "run_date", None)
    if configured is not None:
        return validate_run_date(configured)
    recorded = io.RunLayout(run_dir).path("_stages", "run.json")
    if io.exists(recorded, config.storage):
        value = io.read_json(recorded, config.storage).get("run_date")
        if value:
            return validate_run_date(str(value))
    if scores_marker.get("as_of"):
        return validate_run_date(str(scores_marker["as_of"])[:10])
    from jobs.score import features_as_of

    return validate_run_date(features_as_of(run_dir, config.storage))


def run_export(config: JobConfig, run_dir: str) -> dict[str, Any]:
    """`segments export --run RUN_DIR --to ROOT`: every partner's member exports for every scored segment."""
    started = time.perf_counter()
    storage = config.storage
    root = _root(config)
    layout = io.RunLayout(run_dir)
    io.check_bucket(run_dir, storage)
    io.check_bucket(root, storage)
    scores_marker = io.read_marker(layout.table("scores"), storage)
    io.read_marker(layout.table("identity_map"), storage)
    run_date = export_run_date(config, run_dir, scores_marker)
    if "segments" in scores_marker:  # what the score stage scored (skipped segments are not exported)
        segment_versions: dict[str, str] = dict(scores_marker["segments"] or {})
    else:  # scores written by something else: the configured segments
        segment_versions = {s.name: "" for s in config.segments}
    for segment in segment_versions:
        validate_segment_name(segment)
    run_id = layout.run_id
    write_id = io.new_write_id()
    staging_run = io.join(exports_base(root), STAGING, run_id)
    staging = io.join(staging_run, write_id)
    io.delete(staging_run, storage)  # what an earlier, failed attempt of this run left

    timings: dict[str, float] = {}
    with ray_session(config.ray):
        t = time.perf_counter()
        identity = io.read_dataset(
            layout.table("identity_map"), storage,
            columns=["identifier_type", "identifier", "partner_id", "persona_id", "seen_at_partners"],
        )
        # materialised once: the partner list and the join both read it (sha256 runs once per identifier)
        keys = identity.map_batches(partner_keys, batch_format="pyarrow").materialize()
        partner_tables = ray_get_tables(keys.map_batches(_partners_of_block, batch_format="pyarrow", batch_size=None))
        partners = sorted({p for tbl in partner_tables for p in tbl.column("partner_id").to_pylist() if p is not None})
        timings["partner_keys_s"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        for partner in partners:  # before any path is built from them
            try:
                validate_partner_id(partner)
            except UserError as exc:
                raise UserError(f"identity_map of {run_dir} holds a partner id that cannot be exported: {exc}") from None
        members = io.read_dataset(
            layout.table("scores"), storage, columns=["persona_id", "segment", "score", "percentile", "member"]
        ).map_batches(_members, batch_format="pyarrow")
        joined = keys.join(members, join_type="inner", num_partitions=config.ray.num_partitions, on=("persona_id",))
        written = joined.map_batches(
            _write_parts, fn_kwargs={"staging": staging, "storage": storage}, batch_format="pyarrow", batch_size=None
        )
        part_rows = [row for tbl in ray_get_tables(written) for row in tbl.to_pylist()]
        timings["join_and_write_parts_s"] = round(time.perf_counter() - t, 2)

    by_export: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in part_rows:
        by_export.setdefault((row["partner_id"], row["segment"]), []).append(row)
    created_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    schema = [{"name": f.name, "type": str(f.type)} for f in EXPORT_SCHEMA]
    jobs = []
    for partner in partners:
        for segment, version in sorted(segment_versions.items()):
            parts = by_export.get((partner, segment)) or [_empty_part(staging, partner, segment, storage)]
            manifest = {
                "format_version": FORMAT_VERSION,
                "run_id": run_id,
                "run_date": run_date,
                "partner_id": partner,
                "segment": segment,
                "model_version": version,
                "write_id": write_id,
                "created_at": created_at,
                "schema": schema,
                "key_types": KEY_TYPES,
                "membership": config.scoring.membership,
            }
            jobs.append((export_dir(root, partner, segment, run_date), parts, manifest))

    t = time.perf_counter()
    with ThreadPoolExecutor(max_workers=8) as pool:
        published = list(pool.map(lambda job: publish_export(job[0], job[1], job[2], storage, write_id), jobs))
    io.delete(staging_run, storage)
    staging_base = io.join(exports_base(root), STAGING)
    if not io.is_s3(root):  # S3 has no empty folders; a local one would linger
        try:
            os.rmdir(staging_base)
        except OSError:  # another run is staging there, or it is gone already
            pass
    timings["publish_s"] = round(time.perf_counter() - t, 2)
    exports = [{"partner_id": m["partner_id"], "segment": m["segment"], "rows": m["rows"], "parts": len(m["parts"]),
                "path": job[0]} for job, m in zip(jobs, published)]
    return {
        "stage": "export",
        "run_dir": run_dir,
        "run_id": run_id,
        "run_date": run_date,
        "root": root,
        "partners": len(partners),
        "segments": sorted(segment_versions),
        "exports": exports,
        "rows_out": sum(e["rows"] for e in exports),
        "timings": timings,
        "seconds": round(time.perf_counter() - started, 2),
    }


def ray_get_tables(ds) -> list[pa.Table]:
    import ray

    return [t for t in ray.get(ds.to_arrow_refs()) if t.num_rows]


# ----------------------------------------------------------------------------------------- pulling


def _manifests(root: str, partner: str, storage: StorageConfig) -> list[tuple[str, str, str]]:
    """(segment, run_date, manifest path) of every published export of the partner."""
    base = io.join(exports_base(root), validate_partner_id(partner))
    fs, p = io.filesystem_for(base, storage)
    scheme = "s3://" if io.is_s3(base) else ""
    found = []
    for info in fs.get_file_info(pafs.FileSelector(p, recursive=True, allow_not_found=True)):
        if info.type != pafs.FileType.File or info.base_name != MANIFEST:
            continue
        relative = info.path[len(p):].strip("/").split("/")
        if len(relative) != 3:
            continue
        segment, run_date = relative[0], relative[1]
        try:
            validate_segment_name(segment)
            validate_run_date(run_date)
        except UserError:
            continue
        found.append((segment, run_date, scheme + info.path))
    return sorted(found)


def list_exports(config: JobConfig, partner: str) -> list[dict[str, Any]]:
    """The partner's published exports (only folders with a manifest): segment, run date, rows, ..."""
    root = _root(config)
    validate_partner_id(partner)
    out = []
    for segment, run_date, path in _manifests(root, partner, config.storage):
        manifest = io.read_json(path, config.storage)
        out.append({
            "segment": segment,
            "run_date": run_date,
            "rows": manifest.get("rows"),
            "run_id": manifest.get("run_id"),
            "model_version": manifest.get("model_version"),
            "parts": len(manifest.get("parts", [])),
            "path": posixpath.dirname(path),
        })
    return out


def _presign_client(storage: StorageConfig):
    """A boto3 S3 client that signs with SigV4 (query-string auth bound to bucket, key, expiry and region)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=storage.endpoint_url,
        region_name=storage.region,
        config=Config(signature_version="s3v4", retries={"max_attempts": max(storage.retries, 1), "mode": "standard"}),
    )


def presigned_urls(config: JobConfig, partner: str, segment: str) -> dict[str, Any]:
    """Presigned GET URLs for every part and the manifest of the partner's latest export of a segment."""
    root = _root(config)
    validate_partner_id(partner)
    validate_segment_name(segment)
    if not io.is_s3(root):
        raise UserError(f"presigned URLs need an s3:// exports root, not {root!r}.")
    found = [m for m in _manifests(root, partner, config.storage) if m[0] == segment]
    if not found:
        raise UserError(f"partner {partner!r} has no published export of segment {segment!r} under {root}.")
    _, run_date, manifest_path = max(found, key=lambda m: m[1])
    manifest = io.read_json(manifest_path, config.storage)
    folder = posixpath.dirname(manifest_path)
    client = _presign_client(config.storage)
    expires = config.export.url_expires_seconds

    def _url(path: str) -> str:
        bucket, _, key = _fs_path(path).partition("/")
        return client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires)

    return {
        "partner_id": partner,
        "segment": segment,
        "run_date": run_date,
        "rows": manifest.get("rows"),
        "expires_seconds": expires,
        "manifest": _url(manifest_path),
        "parts": [{"path": part["path"], "rows": part["rows"], "sha256": part["sha256"],
                   "url": _url(io.join(folder, part["path"]))}
                  for part in manifest.get("parts", [])],
    }


_PRINCIPAL = re.compile(r"^(\d{12}|arn:aws[a-z-]*:iam::\d{12}:(root|(user|role)/[A-Za-z0-9+=,.@_/-]{1,512}))$")


def bucket_policy(config: JobConfig, partner: str, principal: str) -> dict[str, Any]:
    """S3 bucket policy statements for the platform team: the partner may read and list its own prefix only."""
    root = _root(config)
    validate_partner_id(partner)
    if not io.is_s3(root):
        raise UserError(f"bucket policies need an s3:// exports root, not {root!r}.")
    if not isinstance(principal, str) or not _PRINCIPAL.match(principal):
        raise UserError(
            f"principal {principal!r} is not an AWS account id or IAM ARN "
            "(e.g. arn:aws:iam::123456789012:role/partner-reader or 123456789012)."
        )
    bucket, _, prefix = root[len("s3://"):].partition("/")
    key_prefix = "/".join(p for p in (prefix.strip("/"), "exports", partner) if p) + "/"
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
