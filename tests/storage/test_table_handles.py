"""Table handles: a bundle's named files (bytes and JSON) publish together and read back through TableIn; a
partition's schema comes from a file footer, without reading data."""

from __future__ import annotations

import pyarrow as pa
import pytest

from jobs.config import StorageConfig
from jobs.errors import UserError
from jobs.storage import TableIn, join, read_json, writing


def test_bundle_json_files_read_back(tmp_path):
    store = StorageConfig()
    table_path = join(str(tmp_path), "models")
    with writing(table_path, store, extra={"segments": {"a": {"status": "trained"}}}) as writer:
        writer.write_json("a/metrics.json", {"b": 1, "a": [1.5, None]})
        writer.write_file("a/model.json", b"{}")
    handle = TableIn("models", table_path, store)
    assert handle.marker["segments"] == {"a": {"status": "trained"}}
    assert handle.file("a/metrics.json") == b'{\n  "a": [\n    1.5,\n    null\n  ],\n  "b": 1\n}'
    assert read_json(join(table_path, handle.version, "a", "metrics.json"), store) == {"a": [1.5, None], "b": 1}
    assert handle.file("a/model.json") == b"{}"


def test_partition_schema_without_reading_data(tmp_path):
    store = StorageConfig()
    table_path = join(str(tmp_path), "features")
    with writing(table_path, store) as writer:
        writer.write_arrow(pa.table({"persona_id": ["p"], "x": [1.0]}), partition={"as_of": "2026-01-01"})
        writer.write_arrow(pa.table({"persona_id": ["p"], "y": [1]}), partition={"as_of": "2026-02-01"})
    handle = TableIn("features", table_path, store)
    assert handle.schema({"as_of": "2026-01-01"}).names == ["persona_id", "x"]
    assert handle.schema({"as_of": "2026-02-01"}).field("y").type == pa.int64()
    with pytest.raises(UserError, match="partition as_of=2026-03-01 has no data files"):
        handle.schema({"as_of": "2026-03-01"})
