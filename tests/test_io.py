import pyarrow as pa
import pytest

from jobs import io
from jobs.config import StorageConfig
from jobs.errors import UserError


@pytest.mark.parametrize("where", ["local", "s3"])
def test_tables_publish_atomically_and_replace(where, tmp_path, storage, s3_bucket):
    root = str(tmp_path) if where == "local" else s3_bucket + "/prefix"
    table_path = io.join(root, "runs", "r1", "personas")
    with pytest.raises(UserError, match="not been published"):
        io.read_marker(table_path, storage)
    io.write_arrow(pa.table({"x": [1, 2, 3]}), table_path, storage)
    first = io.read_marker(table_path, storage)
    assert first["rows"] == 3
    io.write_arrow(pa.table({"x": [4, 5]}), table_path, storage)
    assert io.read_arrow(table_path, storage).column("x").to_pylist() == [4, 5]
    # the old write folder is gone: a rerun replaces, never duplicates
    assert len(io.list_files(table_path, storage, suffixes=(".parquet",))) == 1


def test_dataset_roundtrip_on_s3(ray_cluster, storage, s3_bucket):
    import ray.data

    table_path = s3_bucket + "/runs/r1/events_resolved"
    marker = io.write_dataset(ray.data.range(1000, override_num_blocks=4), table_path, storage)
    assert marker["rows"] == 1000
    assert io.read_dataset(table_path, storage).count() == 1000


def test_missing_bucket_is_a_user_error(storage):
    with pytest.raises(UserError, match="does not exist"):
        io.check_bucket("s3://no-such-bucket-xyz/events", storage)


def test_list_files_skips_hidden_and_filters(tmp_path):
    (tmp_path / "day=1").mkdir()
    (tmp_path / "day=1" / "a.parquet").write_bytes(b"x")
    (tmp_path / "b.jsonl").write_text("{}")
    (tmp_path / "_SUCCESS").write_text("{}")
    (tmp_path / ".staging").mkdir()
    (tmp_path / ".staging" / "c.parquet").write_bytes(b"x")
    files = io.list_files(str(tmp_path), StorageConfig(), suffixes=(".parquet", ".jsonl"))
    assert [f.rsplit("/", 1)[-1] for f in files] == ["b.jsonl", "a.parquet"] or len(files) == 2
    assert io.list_files(str(tmp_path / "*.jsonl"), StorageConfig())[0].endswith("b.jsonl")
