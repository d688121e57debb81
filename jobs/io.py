"""Transitional: the old storage module's names, now served by `jobs.storage` (removed once every stage
reads and writes through `jobs.storage` and `jobs.run.layout`; issue 10)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jobs.storage import (  # noqa: F401
    MARKER,
    check_bucket,
    delete,
    exists,
    filesystem_for,
    is_s3,
    join,
    list_files,
    new_write_id,
    read_arrow,
    read_bytes,
    read_dataset,
    read_json,
    read_marker,
    s3fs_for,
    table_files,
    write_bytes,
    write_json,
    writing,
)


@dataclass(frozen=True)
class RunLayout:
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


def write_dataset(ds, table_path: str, storage, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    with writing(table_path, storage, extra) as writer:
        writer.write_dataset(ds)
    return read_marker(table_path, storage)


def write_arrow(table, table_path: str, storage, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    with writing(table_path, storage, extra) as writer:
        writer.write_arrow(table)
    return read_marker(table_path, storage)
