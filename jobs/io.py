"""Storage at the edges: the only module that touches local disk or object storage.

Paths are local folders or `s3://bucket/prefix`. S3 goes through s3fs (wrapped as a pyarrow filesystem so
Ray Data and pyarrow use the same object), with credentials from the standard AWS chain and botocore's
standard retry mode (exponential backoff) for transient errors.

Tables are published atomically the same way on both: parts go to a fresh `TABLE/<write_id>/` folder and
the table's `_SUCCESS` marker, one small object written last, names that folder. Readers follow the
marker, so they never see half a table; older write folders are removed after the marker moves.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import logging
import posixpath
import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from jobs.config import StorageConfig
from jobs.errors import UserError

log = logging.getLogger(__name__)

MARKER = "_SUCCESS"


def is_s3(path: str) -> bool:
    return path.startswith("s3://")


def join(base: str, *parts: str) -> str:
    return posixpath.join(base.rstrip("/"), *parts)


@lru_cache(maxsize=8)
def _s3fs(endpoint_url: str | None, region: str | None, retries: int):
    import s3fs

    client_kwargs: dict[str, Any] = {}
    if endpoint_url:
        client_kwargs["endpoint_url"] = endpoint_url
    if region:
        client_kwargs["region_name"] = region
    return s3fs.S3FileSystem(
        client_kwargs=client_kwargs,
        config_kwargs={"retries": {"max_attempts": max(retries, 1), "mode": "standard"}},
        use_listings_cache=False,
    )


def s3fs_for(storage: StorageConfig):
    """The s3fs filesystem (presigned URLs, bucket checks); credentials from the AWS chain only."""
    return _s3fs(storage.endpoint_url, storage.region, storage.retries)


def filesystem_for(path: str, storage: StorageConfig) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem for `path` and the path as that filesystem names it."""
    if is_s3(path):
        handler = pafs.FSSpecHandler(s3fs_for(storage))
        return pafs.PyFileSystem(handler), path[len("s3://") :].rstrip("/")
    local = pafs.LocalFileSystem()
    return local, posixpath.abspath(path)


def check_bucket(path: str, storage: StorageConfig) -> None:
    """Fail with a clear message when an s3:// path names a bucket that does not exist or is not ours."""
    if not is_s3(path):
        return
    bucket = path[len("s3://") :].split("/", 1)[0]
    fs = s3fs_for(storage)
    try:
        fs.ls(bucket, refresh=True)
    except FileNotFoundError:
        raise UserError(f"S3 bucket {bucket!r} (from {path}) does not exist.") from None
    except PermissionError:
        raise UserError(f"S3 bucket {bucket!r} (from {path}) is not readable with the current AWS credentials.") from None


def exists(path: str, storage: StorageConfig) -> bool:
    fs, p = filesystem_for(path, storage)
    return fs.get_file_info(p).type != pafs.FileType.NotFound


def list_files(path: str, storage: StorageConfig, suffixes: Iterable[str] | None = None) -> list[str]:
    """Files under a file, folder (recursively, hive partitions included) or glob, sorted; hidden skipped."""
    fs, p = filesystem_for(path, storage)
    scheme = "s3://" if is_s3(path) else ""
    if any(ch in p for ch in "*?["):
        base = p.split("*")[0].split("?")[0].split("[")[0].rsplit("/", 1)[0] or "/"
        candidates = [i for i in fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
                      if i.type == pafs.FileType.File and fnmatch.fnmatch(i.path, p)]
    else:
        info = fs.get_file_info(p)
        if info.type == pafs.FileType.NotFound:
            return []
        if info.type == pafs.FileType.File:
            candidates = [info]
        else:
            candidates = [i for i in fs.get_file_info(pafs.FileSelector(p, recursive=True)) if i.type == pafs.FileType.File]
    files = []
    for info in candidates:
        name = info.path.rsplit("/", 1)[-1]
        relative = info.path[len(p):] if info.path.startswith(p) else info.path
        if name.startswith((".", "_")) or any(part.startswith((".", "_")) for part in relative.split("/")[:-1]):
            continue
        if suffixes is not None and not name.lower().endswith(tuple(suffixes)):
            continue
        files.append(scheme + info.path)
    return sorted(files)


def write_bytes(path: str, data: bytes, storage: StorageConfig) -> None:
    fs, p = filesystem_for(path, storage)
    fs.create_dir(posixpath.dirname(p), recursive=True)
    with fs.open_output_stream(p) as out:
        out.write(data)


def read_bytes(path: str, storage: StorageConfig) -> bytes:
    fs, p = filesystem_for(path, storage)
    with fs.open_input_stream(p) as src:
        return src.read()


def write_json(path: str, payload: Any, storage: StorageConfig) -> None:
    write_bytes(path, json.dumps(payload, indent=2, sort_keys=True, default=str).encode(), storage)


def read_json(path: str, storage: StorageConfig) -> Any:
    return json.loads(read_bytes(path, storage))


def delete(path: str, storage: StorageConfig) -> None:
    """Remove a file or a folder tree; a missing path is fine."""
    fs, p = filesystem_for(path, storage)
    info = fs.get_file_info(p)
    if info.type == pafs.FileType.Directory:
        fs.delete_dir(p)
    elif info.type == pafs.FileType.File:
        fs.delete_file(p)


@dataclass(frozen=True)
class RunLayout:
    """Where one run's tables live: `ROOT/runs/RUN_ID/...` (the run folder is what commands take)."""

    run_dir: str

    @classmethod
    def for_run(cls, root: str, run_id: str) -> "RunLayout":
        return cls(join(root, "runs", run_id))

    @property
    def run_id(self) -> str:
        return self.run_dir.rstrip("/").rsplit("/", 1)[-1]

    def table(self, name: str) -> str:
        return join(self.run_dir, name)

    def path(self, *parts: str) -> str:
        return join(self.run_dir, *parts)


def new_write_id() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]


def publish_marker(table_path: str, write_id: str, storage: StorageConfig, extra: dict[str, Any] | None = None) -> None:
    """Point the table at `write_id` (the atomic step), then drop older write folders."""
    fs, p = filesystem_for(table_path, storage)
    files = [i.path for i in fs.get_file_info(pafs.FileSelector(join(p, write_id), recursive=True))
             if i.type == pafs.FileType.File and i.path.endswith(".parquet")]
    rows = sum(pq.ParquetFile(fs.open_input_file(f)).metadata.num_rows for f in files)
    marker = {"write_id": write_id, "rows": rows, "files": len(files), **(extra or {})}
    write_json(join(table_path, MARKER), marker, storage)
    for info in fs.get_file_info(pafs.FileSelector(p, allow_not_found=True)):
        if info.type == pafs.FileType.Directory and info.base_name != write_id:
            fs.delete_dir(info.path)


def write_dataset(ds, table_path: str, storage: StorageConfig, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write a Ray Dataset as a table (streaming, from the workers) and publish it atomically."""
    fs, p = filesystem_for(table_path, storage)
    write_id = new_write_id()
    ds.write_parquet(join(p, write_id), filesystem=fs)
    publish_marker(table_path, write_id, storage, extra)
    return read_marker(table_path, storage)


def write_arrow(table: pa.Table, table_path: str, storage: StorageConfig, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write one small in-memory table (metrics, manifests' inputs) with the same atomic publish."""
    fs, p = filesystem_for(table_path, storage)
    write_id = new_write_id()
    fs.create_dir(join(p, write_id), recursive=True)
    pq.write_table(table, join(p, write_id, "part-00000.parquet"), filesystem=fs)
    publish_marker(table_path, write_id, storage, extra)
    return read_marker(table_path, storage)


def read_marker(table_path: str, storage: StorageConfig) -> dict[str, Any]:
    marker_path = join(table_path, MARKER)
    if not exists(marker_path, storage):
        raise UserError(f"table {table_path} has not been published (no {MARKER} marker): run the stage that writes it first.")
    return read_json(marker_path, storage)


def table_files(table_path: str, storage: StorageConfig) -> list[str]:
    """The Parquet files of the published version of a table."""
    marker = read_marker(table_path, storage)
    return list_files(join(table_path, marker["write_id"]), storage, suffixes=(".parquet",))


def read_dataset(table_path: str, storage: StorageConfig, columns: list[str] | None = None, **read_args):
    """A published table as a Ray Dataset (lazy, streamed by the workers)."""
    import ray.data

    files = table_files(table_path, storage)
    fs, _ = filesystem_for(table_path, storage)
    paths = [f[len("s3://"):] if is_s3(f) else f for f in files]
    if not paths:
        marker = read_marker(table_path, storage)
        raise UserError(f"table {table_path} (write {marker['write_id']}) has no data files.")
    return ray.data.read_parquet(paths, filesystem=fs, columns=columns, **read_args)


def read_arrow(table_path: str, storage: StorageConfig, columns: list[str] | None = None) -> pa.Table:
    """A small published table in memory (models' metrics, test checks); not for event-sized tables."""
    fs, _ = filesystem_for(table_path, storage)
    files = table_files(table_path, storage)
    tables = [pq.read_table(f[len("s3://"):] if is_s3(f) else f, filesystem=fs, columns=columns) for f in files]
    return pa.concat_tables(tables, promote_options="default") if tables else pa.table({})
