"""Storage at the edges: atomic files, published tables (whole, partitioned, bundles), listings, on local
disk and on S3 over HTTP (moto)."""

from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pytest

from jobs.config import StorageConfig
from jobs.errors import UserError
from jobs.storage import (
    TableIn,
    TableOut,
    check_bucket,
    create_json,
    join,
    list_files,
    read_arrow,
    read_json_or_none,
    read_marker,
    write_bytes,
    write_json,
    writing,
)


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path)
    return request.getfixturevalue("s3_bucket") + "/prefix"


@pytest.fixture()
def store(root, storage):
    return storage if root.startswith("s3://") else StorageConfig()


def test_tables_publish_atomically_and_replace(root, store):
    table_path = join(root, "runs", "r1", "personas")
    with pytest.raises(UserError, match="not been published"):
        read_marker(table_path, store)
    out = TableOut("personas", table_path, store)
    assert out.write_arrow(pa.table({"x": [1, 2, 3]}))["rows"] == 3
    out.write_arrow(pa.table({"x": [4, 5]}))
    assert read_arrow(table_path, store).column("x").to_pylist() == [4, 5]
    # the old write folder is gone: a rerun replaces, never duplicates
    assert len(list_files(table_path, store, suffixes=(".parquet",))) == 1


def test_a_failed_write_publishes_nothing_and_keeps_the_old_version(root, store):
    table_path = join(root, "scores")
    out = TableOut("scores", table_path, store)
    first = out.write_arrow(pa.table({"x": [1]}))
    with pytest.raises(RuntimeError, match="broke"), out.writing() as writer:
        writer.write_arrow(pa.table({"x": [2, 3]}))
        raise RuntimeError("broke")
    assert read_marker(table_path, store)["write_id"] == first["write_id"]
    assert read_arrow(table_path, store).column("x").to_pylist() == [1]


def test_partitions_and_bundles_publish_together(root, store):
    table_path = join(root, "features")
    with writing(table_path, store, extra={"snapshots": ["2026-01-01", "2026-02-01"]}) as writer:
        writer.write_arrow(pa.table({"x": [1, 2]}), partition={"as_of": "2026-01-01"})
        writer.write_arrow(pa.table({"x": [3]}), partition={"as_of": "2026-02-01"})
        writer.write_file("readme/notes.json", b"{}")
    handle = TableIn("features", table_path, store)
    assert handle.marker["rows"] == 3 and handle.marker["snapshots"] == ["2026-01-01", "2026-02-01"]
    assert handle.marker["partitions"] == {"as_of=2026-01-01": 2, "as_of=2026-02-01": 1}
    assert handle.arrow(partition={"as_of": "2026-02-01"}).column("x").to_pylist() == [3]
    assert handle.arrow(partition={"as_of": "2026-02-01"}).column_names == ["x"], "no hive columns added"
    assert handle.file("readme/notes.json") == b"{}"


def test_dataset_roundtrip_with_partitions(ray_cluster, root, store):
    import ray.data

    table_path = join(root, "runs", "r1", "events_resolved")
    with writing(table_path, store) as writer:
        writer.write_dataset(ray.data.range(1000, override_num_blocks=4), partition={"as_of": "2026-01-01"})
        writer.write_dataset(ray.data.range(10), partition={"as_of": "2026-01-02"})
    handle = TableIn("events_resolved", table_path, store)
    assert handle.marker["rows"] == 1010
    assert handle.dataset(partition={"as_of": "2026-01-01"}).count() == 1000
    assert handle.dataset().count() == 1010


def test_missing_bucket_is_a_user_error(storage):
    with pytest.raises(UserError, match="does not exist"):
        check_bucket("s3://no-such-bucket-xyz/events", storage)


def test_list_files_skips_hidden_and_filters(tmp_path):
    (tmp_path / "day=1").mkdir()
    (tmp_path / "day=1" / "a.parquet").write_bytes(b"x")
    (tmp_path / "b.jsonl").write_text("{}")
    (tmp_path / "_SUCCESS").write_text("{}")
    (tmp_path / ".staging").mkdir()
    (tmp_path / ".staging" / "c.parquet").write_bytes(b"x")
    files = list_files(str(tmp_path), StorageConfig(), suffixes=(".parquet", ".jsonl"))
    assert sorted(f.rsplit("/", 1)[-1] for f in files) == ["a.parquet", "b.jsonl"]
    assert list_files(str(tmp_path / "*.jsonl"), StorageConfig())[0].endswith("b.jsonl")


def test_local_writes_are_atomic_a_reader_never_sees_a_torn_file(tmp_path):
    """A reader polling while a writer replaces the file thousands of times sees only whole versions."""
    path = str(tmp_path / "_stages" / "lease.json")
    write_json(path, {"beat": 0, "pad": "x" * 20000}, StorageConfig())
    seen: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            with open(path, "rb") as handle:
                data = handle.read()
            try:
                json.loads(data)
            except ValueError:
                seen.append(f"torn read of {len(data)} bytes")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for beat in range(1, 1500):
            write_json(path, {"beat": beat, "pad": "x" * 20000}, StorageConfig())
    finally:
        stop.set()
        thread.join()
    assert seen == []
    assert sorted(p.name for p in (tmp_path / "_stages").iterdir()) == ["lease.json"], "no temporary files left"


def test_a_torn_or_foreign_json_file_reads_as_absent_with_a_warning(tmp_path, caplog):
    path = tmp_path / "marker.json"
    assert read_json_or_none(str(path), StorageConfig()) is None
    path.write_bytes(b'{"write_id": "2026')
    with caplog.at_level(logging.WARNING):
        assert read_json_or_none(str(path), StorageConfig()) is None
    assert "not a valid JSON file" in caplog.text
    write_bytes(str(path), b'{"ok": 1}', StorageConfig())
    assert read_json_or_none(str(path), StorageConfig()) == {"ok": 1}


def test_create_json_writes_only_where_nothing_is_and_one_racing_writer_wins(root, store):
    """The lease's first claim: a local hard link or an S3 PUT with If-None-Match."""
    path = join(root, "_stages", "lease.json")
    assert create_json(path, {"owner": "a"}, store)
    assert not create_json(path, {"owner": "b"}, store)
    assert read_json_or_none(path, store) == {"owner": "a"}, "the file that was there is kept"

    racing = join(root, "_stages", "race.json")
    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(lambda i: create_json(racing, {"owner": i}, store), range(8)))
    assert won.count(True) == 1
    assert read_json_or_none(racing, store) == {"owner": won.index(True)}
    if not root.startswith("s3://"):
        assert sorted(p.name for p in Path(root, "_stages").iterdir()) == ["lease.json", "race.json"], "no temporaries"


def test_create_json_says_so_when_the_store_refuses_conditional_writes(s3_bucket, storage, monkeypatch):
    """A store that answers a conditional PUT with S3's 501 NotImplemented (s3fs: OSError ENOSYS)."""
    import errno

    from jobs.storage import s3fs_for

    def refuse(*args, **kwargs):
        raise OSError(errno.ENOSYS, "NotImplemented: If-None-Match")

    monkeypatch.setattr(s3fs_for(storage), "pipe_file", refuse)
    with pytest.raises(NotImplementedError, match="conditional writes"):
        create_json(join(s3_bucket, "_stages", "lease.json"), {"owner": "a"}, storage)
