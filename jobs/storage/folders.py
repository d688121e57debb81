"""Manifest-last folders: a folder whose files count only once its manifest is there.

Readers outside our code (partners pulling exports with their own tools) cannot follow a `_SUCCESS` marker
into a write folder the way our tables do (`jobs.storage.tables`): they read a fixed folder. So the folder
itself is replaced, in an order that never shows a reader half of it:

    1. the manifest goes first       from here on readers ignore the folder
    2. the old files go              an earlier write, or what a failed attempt left
    3. the new files move in         from a staging place: a rename locally, a server-side copy on S3
    4. the manifest is written last  atomically (`write_json`): the folder is readable again, whole

A failure anywhere before step 4 leaves a folder without a manifest, which readers skip; publishing again
repairs it. The manifest's name comes from the caller's layout (`jobs.run.layout`).
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs

from jobs.config import StorageConfig
from jobs.storage.files import read_json_or_none, write_json
from jobs.storage.paths import filesystem_for, is_s3, join


@dataclass(frozen=True)
class FolderRelease:
    """What one folder becomes: `files` (name in the folder -> staged file it comes from) and its manifest."""

    folder: str
    manifest_name: str
    manifest: Mapping[str, Any]
    files: Mapping[str, str] = field(default_factory=dict)

    @property
    def manifest_path(self) -> str:
        return join(self.folder, self.manifest_name)


def publish_folder(release: FolderRelease, storage: StorageConfig) -> None:
    """Replace the folder's files by the staged ones; the manifest is the last thing written."""
    fs, folder = filesystem_for(release.folder, storage)
    _, manifest = filesystem_for(release.manifest_path, storage)
    if fs.get_file_info(manifest).type != pafs.FileType.NotFound:
        fs.delete_file(manifest)
    if fs.get_file_info(folder).type == pafs.FileType.Directory:
        fs.delete_dir_contents(folder)
    fs.create_dir(folder, recursive=True)
    for name, staged in sorted(release.files.items()):
        _, source = filesystem_for(staged, storage)
        target = posixpath.join(folder, name)
        if is_s3(release.folder):
            fs.copy_file(source, target)  # server-side: the bytes never pass through this process
        else:
            fs.move(source, target)  # a rename within one filesystem
    write_json(release.manifest_path, dict(release.manifest), storage)


def publish_folders(releases: Sequence[FolderRelease], storage: StorageConfig, threads: int = 8) -> None:
    """Publish many folders, several at a time (each is a handful of small requests on S3)."""
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(releases)))) as pool:
        list(pool.map(lambda release: publish_folder(release, storage), releases))


def published_manifest(folder: str, manifest_name: str, storage: StorageConfig) -> dict[str, Any] | None:
    """The folder's manifest, or None when the folder is not published (missing, or being replaced)."""
    return read_json_or_none(join(folder, manifest_name), storage)


def published_folders(base: str, manifest_name: str, storage: StorageConfig) -> list[tuple[str, ...]]:
    """Every published folder under `base`, as its path components relative to `base`, sorted.

    Folders whose names start with `.` or `_` (staging areas) are not looked into.
    """
    fs, root = filesystem_for(base, storage)
    found = []
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True)):
        if info.type != pafs.FileType.File or info.base_name != manifest_name:
            continue
        parts = tuple(posixpath.dirname(info.path[len(root) :].lstrip("/")).split("/"))
        if parts != ("",) and not _hidden(parts):
            found.append(parts)
    return sorted(found)


def _hidden(parts: Iterable[str]) -> bool:
    return any(part.startswith((".", "_")) for part in parts)


def remove_empty_folder(path: str, storage: StorageConfig) -> None:
    """Remove a local folder left empty (S3 has no empty folders); one still in use by someone is kept."""
    if is_s3(path):
        return
    _, local = filesystem_for(path, storage)
    try:
        os.rmdir(local)
    except OSError:  # not empty (another run is staging there) or gone already
        pass
