"""Manifest-last folders (`jobs.storage.folders`) and the small storage helpers exports use: Parquet files
written whole, presigned URLs. Local disk and moto S3 over HTTP."""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.config import StorageConfig
from jobs.errors import UserError
from jobs.storage import (
    FolderRelease,
    bucket_of,
    exists,
    folders,
    join,
    list_files,
    presigned_url,
    publish_folder,
    publish_folders,
    published_folders,
    published_manifest,
    read_bytes,
    remove_empty_folder,
    write_bytes,
    write_parquet,
)

MANIFEST = "manifest.json"


def names(folder: str, storage: StorageConfig) -> list[str]:
    return sorted(f.rsplit("/", 1)[-1] for f in list_files(folder, storage))


def stage(base: str, storage: StorageConfig, **files: bytes) -> dict[str, str]:
    staged = {}
    for name, data in files.items():
        staged[name] = join(base, "_staging", name)
        write_bytes(staged[name], data, storage)
    return staged


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_folder_is_replaced_whole_and_its_manifest_comes_last(where, tmp_path, storage, s3_bucket, monkeypatch):
    base = str(tmp_path) if where == "local" else s3_bucket + "/p"
    folder = join(base, "exports", "p1", "seg", "2026-03-01")
    publish_folder(FolderRelease(folder, MANIFEST, {"v": 1}, stage(base, storage, a=b"1", b=b"2")), storage)
    assert names(folder, storage) == ["a", "b", MANIFEST] and published_manifest(folder, MANIFEST, storage) == {"v": 1}

    # the manifest write fails after the new files are in: the folder has no manifest (readers skip it)
    real_write_json = folders.write_json
    seen = []

    def fails(path, payload, storage):
        seen.append(sorted(names(folder, storage)))  # what the folder holds when the manifest is written
        raise OSError("injected")

    monkeypatch.setattr(folders, "write_json", fails)
    with pytest.raises(OSError, match="injected"):
        publish_folder(FolderRelease(folder, MANIFEST, {"v": 2}, stage(base, storage, c=b"3")), storage)
    assert seen == [["c"]], "old files and the old manifest were gone, the new file in, when the manifest came"
    assert published_manifest(folder, MANIFEST, storage) is None
    assert published_folders(join(base, "exports"), MANIFEST, storage) == []

    monkeypatch.setattr(folders, "write_json", real_write_json)
    publish_folder(FolderRelease(folder, MANIFEST, {"v": 3}, stage(base, storage, d=b"4")), storage)
    assert names(folder, storage) == ["d", MANIFEST] and read_bytes(join(folder, "d"), storage) == b"4"
    assert published_manifest(folder, MANIFEST, storage) == {"v": 3}
    assert published_folders(join(base, "exports"), MANIFEST, storage) == [("p1", "seg", "2026-03-01")]
    if where == "local":
        assert not exists(join(base, "_staging", "d"), storage), "moved in locally (a rename)"


def test_published_folders_skip_staging_and_hidden_folders(tmp_path):
    storage = StorageConfig()
    base = str(tmp_path)
    releases = [
        FolderRelease(join(base, *parts), MANIFEST, {"at": "/".join(parts)})
        for parts in (("p1", "a"), ("p2", "b"), ("_staging", "r1"), (".tmp", "x"))
    ]
    publish_folders(releases, storage)
    assert published_folders(base, MANIFEST, storage) == [("p1", "a"), ("p2", "b")]
    assert published_folders(join(base, "nowhere"), MANIFEST, storage) == []


def test_remove_empty_folder_keeps_a_folder_in_use(tmp_path):
    storage = StorageConfig()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "f").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    remove_empty_folder(str(tmp_path / "busy"), storage)
    remove_empty_folder(str(tmp_path / "empty"), storage)
    remove_empty_folder(str(tmp_path / "gone"), storage)
    assert (tmp_path / "busy" / "f").exists() and not (tmp_path / "empty").exists()


@pytest.mark.parametrize("where", ["local", "s3"])
def test_write_parquet_returns_exactly_the_bytes_it_wrote(where, tmp_path, storage, s3_bucket):
    path = join(str(tmp_path) if where == "local" else s3_bucket, "t", "part.parquet")
    table = pa.table({"k": ["a", "b"], "v": [1.0, 2.0]})
    data = write_parquet(path, table, storage, compression="zstd")
    on_store = read_bytes(path, storage)
    assert hashlib.sha256(on_store).hexdigest() == hashlib.sha256(data).hexdigest()
    assert pq.read_table(pa.BufferReader(on_store)).equals(table)
    assert pq.ParquetFile(pa.BufferReader(on_store)).metadata.row_group(0).column(0).compression == "ZSTD"


def test_presigned_url_is_sigv4_for_s3_paths_only(storage, s3_bucket):
    url = presigned_url(s3_bucket + "/a/b.json", storage, 120)
    assert url.startswith(f"{storage.endpoint_url}/{bucket_of(s3_bucket)}/a/b.json?")
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url and "X-Amz-Expires=120" in url
    with pytest.raises(UserError, match="s3://"):
        presigned_url("/tmp/a/b.json", storage, 120)
