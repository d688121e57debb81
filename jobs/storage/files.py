"""Files: listing, reading, and writing that a reader never sees half of.

A local file is written to a temporary name in the same folder, fsynced, renamed over the target and the
folder fsynced; an S3 object is one PUT. Either way a reader sees the old content or the new, never a torn
file. `read_json_or_none` treats a file that is missing, torn or not ours as absent (with a warning), for
markers and leases that a crashed writer of an older version may have left behind.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import logging
import math
import os
import posixpath
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from jobs.config import StorageConfig
from jobs.errors import UserError
from jobs.storage.paths import filesystem_for, fs_path, is_s3, join, s3fs_for, with_scheme

log = logging.getLogger(__name__)


def exists(path: str, storage: StorageConfig) -> bool:
    fs, p = filesystem_for(path, storage)
    return fs.get_file_info(p).type != pafs.FileType.NotFound


def is_dir(path: str, storage: StorageConfig) -> bool:
    fs, p = filesystem_for(path, storage)
    return fs.get_file_info(p).type == pafs.FileType.Directory


def _hidden(relative: str) -> bool:
    return any(part.startswith((".", "_")) for part in relative.split("/") if part)


def list_files(path: str, storage: StorageConfig, suffixes: Iterable[str] | None = None) -> list[str]:
    """Files under a file, folder (recursively, hive partitions included) or glob, sorted; hidden skipped."""
    fs, p = filesystem_for(path, storage)
    if any(ch in p for ch in "*?["):
        base = p.split("*")[0].split("?")[0].split("[")[0].rsplit("/", 1)[0] or "/"
        selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        candidates = [
            i for i in fs.get_file_info(selector) if i.type == pafs.FileType.File and fnmatch.fnmatch(i.path, p)
        ]
        root = base
    else:
        info = fs.get_file_info(p)
        if info.type == pafs.FileType.NotFound:
            return []
        if info.type == pafs.FileType.File:
            return [path] if suffixes is None or path.lower().endswith(tuple(suffixes)) else []
        candidates = [i for i in fs.get_file_info(pafs.FileSelector(p, recursive=True)) if i.type == pafs.FileType.File]
        root = p
    files = []
    for info in candidates:
        relative = info.path[len(root) :] if info.path.startswith(root) else info.base_name
        if _hidden(relative):
            continue
        if suffixes is not None and not info.base_name.lower().endswith(tuple(suffixes)):
            continue
        files.append(with_scheme(path, info.path))
    return sorted(files)


def run_count(sizes: Sequence[int], at_least: int, run_bytes: int) -> int:
    """How many runs of consecutive files to read them in: one per `run_bytes` of them, at least `at_least` (the
    cluster's parallelism), at most one per file (a run holds whole files)."""
    return max(1, min(len(sizes), max(at_least, math.ceil(sum(sizes) / run_bytes))))


def byte_runs(sizes: Sequence[int], runs: int) -> list[list[int]]:
    """The positions of files of `sizes` (in order) in `runs` runs of consecutive files of about the same bytes
    (none empty)."""
    total = sum(max(1, size) for size in sizes)
    groups: list[list[int]] = [[] for _ in range(runs)]
    seen = group = 0
    for i, size in enumerate(sizes):
        # the run whose share of the bytes this file starts in, never fewer files left than runs to fill, and
        # no run skipped (a large file starts the next one)
        wanted = max(min(seen * runs // total, runs - 1), runs - (len(sizes) - i))
        group = max(group, min(wanted, group + 1)) if i else 0
        groups[group].append(i)
        seen += max(1, size)
    return [g for g in groups if g]


def file_sizes(paths: list[str], storage: StorageConfig) -> list[tuple[str, int, int]]:
    """(path, size, modification time in ns) of each file, in one listing call where the store allows."""
    if not paths:
        return []
    fs, _ = filesystem_for(paths[0], storage)
    infos = fs.get_file_info([filesystem_for(p, storage)[1] for p in paths])
    return [(p, int(i.size or 0), int(i.mtime_ns or 0)) for p, i in zip(paths, infos)]


def read_bytes(path: str, storage: StorageConfig) -> bytes:
    fs, p = filesystem_for(path, storage)
    with fs.open_input_stream(p) as src:
        return src.read()


def write_bytes(path: str, data: bytes, storage: StorageConfig) -> None:
    """Replace `path` with `data` atomically (see the module docstring)."""
    if is_s3(path):
        fs, p = filesystem_for(path, storage)
        with fs.open_output_stream(p) as out:  # one PUT: the object appears whole or not at all
            out.write(data)
        return
    _place_local(path, data, os.replace)


def create_bytes(path: str, data: bytes, storage: StorageConfig) -> bool:
    """Write `path` with `data` atomically only if nothing is there: True when this call created it. Of
    writers racing for one path exactly one gets True. A local file is a complete temporary file linked in
    place (a link never replaces); an S3 object is one PUT with `If-None-Match: *` (a store that ignored the
    condition would let the last writer win, as `write_bytes` does). NotImplementedError: the store refuses
    conditional PUTs (S3's `NotImplemented`)."""
    if is_s3(path):
        try:
            s3fs_for(storage).pipe_file(fs_path(path), data, mode="create")
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno == errno.ENOSYS:  # s3fs's translation of S3's 501 NotImplemented
                raise NotImplementedError(f"{path}: the store does not take conditional writes") from exc
            raise
        return True
    try:
        _place_local(path, data, os.link)
    except FileExistsError:
        return False
    return True


def _place_local(path: str, data: bytes, place: Callable[[str, str], None]) -> None:
    """`data` written and fsynced under a temporary name beside `path`, then `place(temporary, path)` (a rename
    or a link), and the folder fsynced."""
    target = os.path.abspath(path)
    folder = os.path.dirname(target)
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, f".{os.path.basename(target)}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(temporary, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        place(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    _fsync_folder(folder)


def write_parquet(path: str, table: pa.Table, storage: StorageConfig, **options: Any) -> bytes:
    """Write one small table as one Parquet file, atomically (`write_bytes`); returns the bytes written
    (for checksums). `options` go to `pyarrow.parquet.write_table` (compression ...)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **options)
    data = sink.getvalue().to_pybytes()
    write_bytes(path, data, storage)
    return data


def read_parquet(path: str, storage: StorageConfig, columns: list[str] | None = None) -> pa.Table:
    """One Parquet file as a table (only `columns`, when given), local or on S3."""
    fs, _ = filesystem_for(path, storage)
    return pq.read_table(fs_path(path), filesystem=fs, columns=columns, partitioning=None)


def _fsync_folder(folder: str) -> None:
    """Make the rename itself durable (a crash after it must not bring the old name back)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:  # some filesystems refuse fsync on folders; the rename is still atomic
        pass
    finally:
        os.close(handle)


def write_json(path: str, payload: Any, storage: StorageConfig) -> None:
    write_bytes(path, _json_bytes(payload), storage)


def create_json(path: str, payload: Any, storage: StorageConfig) -> bool:
    """`create_bytes` of `payload` in `write_json`'s format."""
    return create_bytes(path, _json_bytes(payload), storage)


def _json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, indent=2, sort_keys=True, default=str).encode()


def read_json(path: str, storage: StorageConfig) -> Any:
    return json.loads(read_bytes(path, storage))


def read_json_or_none(path: str, storage: StorageConfig) -> Any:
    """The JSON at `path`, or None when it is missing, torn or not JSON (a warning says which)."""
    try:
        return read_json(path, storage)
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError) as exc:
        log.warning("%s is not a valid JSON file (%s): treated as absent", path, type(exc).__name__)
        return None


def delete(path: str, storage: StorageConfig) -> None:
    """Remove a file or a folder tree; a missing path is fine."""
    fs, p = filesystem_for(path, storage)
    info = fs.get_file_info(p)
    if info.type == pafs.FileType.Directory:
        fs.delete_dir(p)
    elif info.type == pafs.FileType.File:
        fs.delete_file(p)


def copy_file(source: str, target: str, storage: StorageConfig) -> None:
    """Copy one file within a store (server-side on S3); the target appears whole."""
    fs, src = filesystem_for(source, storage)
    _, dst = filesystem_for(target, storage)
    if is_s3(target):
        fs.copy_file(src, dst)
        return
    fs.create_dir(posixpath.dirname(dst), recursive=True)
    temporary = posixpath.join(posixpath.dirname(dst), f".{posixpath.basename(dst)}.{uuid.uuid4().hex[:8]}.tmp")
    fs.copy_file(src, temporary)
    fs.move(temporary, dst)


def subfolders(path: str, storage: StorageConfig) -> list[str]:
    """Names of the folders directly under `path` (none when it does not exist)."""
    fs, p = filesystem_for(path, storage)
    infos = fs.get_file_info(pafs.FileSelector(p, allow_not_found=True))
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)


def check_writable(folder: str, storage: StorageConfig) -> None:
    """Fail before any work when `folder` cannot be written: a probe file is written there and removed.

    A local folder is created (parents too). A path that cannot be a folder or is not writable, or an S3
    bucket that is missing or refuses the write, is a UserError naming it (exit 2); a store that does not
    answer is left to the caller (exit 3 after retries).
    """
    probe = join(folder, f".write-check-{uuid.uuid4().hex[:8]}")
    refused: tuple[type[OSError], ...] = (
        (FileNotFoundError, NotADirectoryError, PermissionError, FileExistsError, IsADirectoryError)
        if is_s3(folder)
        else (OSError,)
    )
    try:
        write_bytes(probe, b"", storage)
        delete(probe, storage)
    except refused as exc:
        reason = exc.strerror or type(exc).__name__
        raise UserError(
            f"cannot write to {folder} ({reason}; nothing was read or written). Choose another output "
            "folder or root, or fix its permissions."
        ) from None
