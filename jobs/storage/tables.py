"""Published tables: a reader never sees half of one.

A table is a folder. Its data goes to a fresh `TABLE/<write_id>/` folder (Parquet parts, hive partitions
such as `as_of=2026-06-30/` where a table holds several snapshots, or named files for a bundle such as the
models), and the table's `_SUCCESS` marker, one small file written last, names that folder. Readers follow
the marker; older write folders are removed after it moves. The same on local disk and S3.

Stages see tables through two handles: `TableIn` (a table a stage reads: its marker, files, a Ray Dataset,
its blocks in the object store, or a small Arrow table) and `TableOut` (a table a stage publishes), so a stage
touches nothing else.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import posixpath
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from jobs.config import StorageConfig
from jobs.errors import UserError
from jobs.storage.files import (
    byte_runs,
    file_sizes,
    list_files,
    read_bytes,
    read_json_or_none,
    read_parquet,
    run_count,
    write_bytes,
    write_json,
)
from jobs.storage.paths import filesystem_for, fs_path, join

MARKER = "_SUCCESS"
PARQUET = (".parquet",)


def new_write_id() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]


def partition_folder(partition: Mapping[str, Any] | None) -> str:
    """`as_of=2026-06-30/segment=x` for {"as_of": date(2026, 6, 30), "segment": "x"}; "" for none."""
    return "/".join(f"{k}={v.isoformat() if hasattr(v, 'isoformat') else v}" for k, v in (partition or {}).items())


def marker_or_none(table_path: str, storage: StorageConfig) -> dict[str, Any] | None:
    return read_json_or_none(join(table_path, MARKER), storage)


def read_marker(table_path: str, storage: StorageConfig) -> dict[str, Any]:
    marker = marker_or_none(table_path, storage)
    if marker is None:
        raise UserError(
            f"table {table_path} has not been published (no {MARKER} marker): run the stage that writes it first."
        )
    return marker


def _parquet_rows(fs: pafs.FileSystem, files: list[str]) -> int:
    return sum(pq.ParquetFile(fs.open_input_file(f)).metadata.num_rows for f in files)


@dataclass
class TableWriter:
    """Everything written through one writer lands in one write folder, published together on `publish`."""

    table_path: str
    storage: StorageConfig
    write_id: str = field(default_factory=new_write_id)
    extra: dict[str, Any] = field(default_factory=dict)

    def folder(self, partition: Mapping[str, Any] | None = None) -> str:
        sub = partition_folder(partition)
        return join(self.table_path, self.write_id, sub) if sub else join(self.table_path, self.write_id)

    def write_dataset(self, ds, partition: Mapping[str, Any] | None = None) -> None:
        """A Ray Dataset, written by the workers (streaming; nothing passes through the driver)."""
        fs, p = filesystem_for(self.folder(partition), self.storage)
        ds.write_parquet(p, filesystem=fs)

    def write_blocks(self, blocks: Sequence[Any], partition: Mapping[str, Any] | None = None) -> int:
        """Tables already in the object store (references), a file each written by a Ray task (nothing passes
        through the driver; an empty table writes none): a Ray Data write of them would pay a streaming
        executor's start-up, ~0.3-2 s on 2 cores, for work that is one `write_table` per block. Returns the
        rows written."""
        import ray  # not at import: the storage layer also serves processes without Ray

        folder = self.folder(partition)
        fs, p = filesystem_for(folder, self.storage)
        fs.create_dir(p, recursive=True)
        writer = _remote(_write_file)
        paths = [join(folder, f"part-{i:05d}.parquet") for i in range(len(blocks))]
        return sum(ray.get([writer.remote(block, path, self.storage) for block, path in zip(blocks, paths)]))

    def write_arrow(
        self, table: pa.Table, partition: Mapping[str, Any] | None = None, name: str = "part-00000"
    ) -> None:
        """One small in-memory table (metrics, test fixtures): never for event-sized data."""
        fs, p = filesystem_for(self.folder(partition), self.storage)
        fs.create_dir(p, recursive=True)
        pq.write_table(table, posixpath.join(p, f"{name}.parquet"), filesystem=fs)

    def write_file(self, relative: str, data: bytes) -> None:
        """A named file of a bundle (a model, its card)."""
        write_bytes(join(self.folder(), relative), data, self.storage)

    def write_json(self, relative: str, payload: Any) -> None:
        """A named JSON file of a bundle (a model card, metrics), in `write_json`'s format."""
        write_json(join(self.folder(), relative), payload, self.storage)

    def publish(self) -> dict[str, Any]:
        """Count what was written, point the marker at it (the atomic step), drop older write folders."""
        fs, root = filesystem_for(self.table_path, self.storage)
        folder = join(root, self.write_id)
        infos = fs.get_file_info(pafs.FileSelector(folder, recursive=True, allow_not_found=True))
        parquet = sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(".parquet"))
        partitions: dict[str, int] = {}
        for path in parquet:
            sub = posixpath.dirname(path[len(folder) :].lstrip("/"))
            partitions[sub] = partitions.get(sub, 0) + _parquet_rows(fs, [path])
        marker = {
            "write_id": self.write_id,
            "rows": sum(partitions.values()),
            "files": len(parquet),
            "published_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            **self.extra,
        }
        named = {k: v for k, v in sorted(partitions.items()) if k}
        if named:
            marker["partitions"] = named
        write_json(join(self.table_path, MARKER), marker, self.storage)
        for info in fs.get_file_info(pafs.FileSelector(root, allow_not_found=True)):
            if info.type == pafs.FileType.Directory and info.base_name != self.write_id:
                fs.delete_dir(info.path)
        return marker


@contextlib.contextmanager
def writing(table_path: str, storage: StorageConfig, extra: dict[str, Any] | None = None) -> Iterator[TableWriter]:
    """Write a table's parts inside the block; it is published only when the block ends without an error."""
    writer = TableWriter(table_path, storage, extra=dict(extra or {}))
    yield writer
    writer.publish()


def table_files(
    table_path: str,
    storage: StorageConfig,
    partition: Mapping[str, Any] | None = None,
    suffixes: tuple[str, ...] | None = PARQUET,
) -> list[str]:
    """The files of the published version of a table (of one partition, if given)."""
    marker = read_marker(table_path, storage)
    folder = join(table_path, marker["write_id"])
    sub = partition_folder(partition)
    return list_files(join(folder, sub) if sub else folder, storage, suffixes=suffixes)


def _data_files(table_path: str, storage: StorageConfig, partition: Mapping[str, Any] | None) -> list[str]:
    """The files a read of the table (of one partition) takes; a user's error when there are none."""
    files = table_files(table_path, storage, partition)
    if not files:
        where = f" partition {partition_folder(partition)}" if partition else ""
        raise UserError(f"table {table_path}{where} has no data files.")
    return files


def read_dataset(
    table_path: str,
    storage: StorageConfig,
    columns: list[str] | None = None,
    partition: Mapping[str, Any] | None = None,
    **read_args,
):
    """A published table (or one partition of it) as a Ray Dataset, read lazily by the workers."""
    import ray.data

    from jobs.raykit.session import configure_data_context

    configure_data_context()

    files = _data_files(table_path, storage, partition)
    fs, _ = filesystem_for(table_path, storage)
    return ray.data.read_parquet(
        [fs_path(f) for f in files], filesystem=fs, columns=columns, partitioning=None, **read_args
    )


def read_blocks(
    table_path: str,
    storage: StorageConfig,
    columns: list[str] | None = None,
    partition: Mapping[str, Any] | None = None,
    then: Callable[..., pa.Table] | None = None,
    args: Sequence[Any] = (),
    task_bytes: int = 0,
) -> list:
    """A published table (or one partition of it) as blocks in the object store, one Ray task per file (or run
    of files, `task_bytes`), started and not waited for: for tables that tasks take as arguments, e.g. to look
    people up in. A Ray Data read would pay a streaming executor's start-up (0.3-0.7 s on 2 cores) for a few
    small files.

    `task_bytes`: a task reads a run of consecutive files of about that many bytes together (`_file_runs`), so
    a small table is a few blocks, not one per file: every later pass over its blocks pays a task per block.
    The blocks hold the same rows in the same order either way.

    `then`: each block is `then(its files' rows, *args)` instead, in the same task; object references in
    `args` reach it as their values (Ray fetches them before the task starts, so it never blocks holding a CPU)."""
    files = _data_files(table_path, storage, partition)
    runs = _file_runs(files, storage, task_bytes) if task_bytes and len(files) > 1 else [[f] for f in files]
    return [_remote(_read_files).remote(run, storage, columns, then, *args) for run in runs]


def _file_runs(files: list[str], storage: StorageConfig, task_bytes: int) -> list[list[str]]:
    """`files` (in order) in runs of consecutive files of about equal bytes, as many as their bytes /
    `task_bytes`, but no fewer than the cluster's CPUs (its parallelism) nor more than the files."""
    import ray  # not at import: the storage layer also serves processes without Ray

    sizes = [size for _, size, _ in file_sizes(files, storage)]
    runs = run_count(sizes, int(ray.cluster_resources().get("CPU", 1)), task_bytes)
    return [[files[i] for i in run] for run in byte_runs(sizes, runs)]


def _read_files(paths: list[str], storage: StorageConfig, columns: list[str] | None, then, *args) -> pa.Table:
    tables = [read_parquet(path, storage, columns) for path in paths]
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")
    return table if then is None else then(table, *args)


def _write_file(table: pa.Table, path: str, storage: StorageConfig) -> int:
    if table.num_rows:
        fs, p = filesystem_for(path, storage)
        pq.write_table(table, p, filesystem=fs)
    return table.num_rows


@functools.cache
def _remote(fn: Callable) -> Any:
    """`fn` as a Ray remote function, made once per process."""
    import ray  # not at import: the storage layer also serves processes without Ray

    return ray.remote(fn)


def read_arrow(
    table_path: str,
    storage: StorageConfig,
    columns: list[str] | None = None,
    partition: Mapping[str, Any] | None = None,
) -> pa.Table:
    """A small published table in memory (metrics, test checks); not for event-sized tables."""
    tables = [read_parquet(f, storage, columns) for f in table_files(table_path, storage, partition)]
    return pa.concat_tables(tables, promote_options="default") if tables else pa.table({})


def read_schema(table_path: str, storage: StorageConfig, partition: Mapping[str, Any] | None = None) -> pa.Schema:
    """The columns of a published table (of one partition), from its first file's footer: no data is read."""
    files = _data_files(table_path, storage, partition)
    fs, _ = filesystem_for(table_path, storage)
    return pq.read_schema(fs_path(files[0]), filesystem=fs)


def read_published_file(table_path: str, relative: str, storage: StorageConfig) -> bytes:
    """A named file of the published version of a bundle."""
    marker = read_marker(table_path, storage)
    return read_bytes(join(table_path, marker["write_id"], relative), storage)


@dataclass(frozen=True)
class TableIn:
    """A published table a stage reads. `version` is what the stage's fingerprint records."""

    name: str
    path: str
    storage: StorageConfig

    @property
    def marker(self) -> dict[str, Any]:
        return read_marker(self.path, self.storage)

    @property
    def version(self) -> str | None:
        marker = marker_or_none(self.path, self.storage)
        return None if marker is None else marker.get("write_id")

    def files(self, partition: Mapping[str, Any] | None = None) -> list[str]:
        return table_files(self.path, self.storage, partition)

    def dataset(self, columns: list[str] | None = None, partition: Mapping[str, Any] | None = None, **read_args):
        return read_dataset(self.path, self.storage, columns=columns, partition=partition, **read_args)

    def blocks(
        self,
        columns: list[str] | None = None,
        partition: Mapping[str, Any] | None = None,
        then: Callable[..., pa.Table] | None = None,
        args: Sequence[Any] = (),
        task_bytes: int = 0,
    ) -> list:
        return read_blocks(self.path, self.storage, columns, partition, then, args, task_bytes)

    def arrow(self, columns: list[str] | None = None, partition: Mapping[str, Any] | None = None) -> pa.Table:
        return read_arrow(self.path, self.storage, columns=columns, partition=partition)

    def schema(self, partition: Mapping[str, Any] | None = None) -> pa.Schema:
        return read_schema(self.path, self.storage, partition)

    def file(self, relative: str) -> bytes:
        return read_published_file(self.path, relative, self.storage)


@dataclass(frozen=True)
class TableOut:
    """A table a stage publishes: everything written through one `writing()` block appears at once."""

    name: str
    path: str
    storage: StorageConfig

    def writing(self, extra: dict[str, Any] | None = None):
        return writing(self.path, self.storage, extra)

    def write_dataset(self, ds, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        with self.writing(extra) as writer:
            writer.write_dataset(ds)
        return read_marker(self.path, self.storage)

    def write_arrow(self, table: pa.Table, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        with self.writing(extra) as writer:
            writer.write_arrow(table)
        return read_marker(self.path, self.storage)
