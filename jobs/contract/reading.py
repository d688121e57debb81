"""Reading the input: cheap file checks, then rows normalised to one canonical schema.

Files are checked cheaply on the driver before anything runs (size, Parquet footer, the first JSON lines):
a missing path or bucket, an empty file, a corrupt Parquet file or a file without a required column is a
`UserError` naming the file (`plan_input`). Rows are then read by Ray Data (`read_events`: one read per group
of files with the same schema, explicit file lists) or, for the single-process baseline, by pyarrow
(`read_events_local`), and every batch is normalised to the canonical schema (`normalise_batch`): contract
columns typed, extra columns carried through as strings, plus `_source_file` and `_reason` (null for a
valid row). The row rules after that (duplicates, quarantine) are in `jobs.contract.rows`.

The set of extra columns is fixed up front: Parquet footers give it exactly; for JSON Lines it is the keys
of each file's first records (256 KiB / 500 lines), so a key that first appears later in a file is dropped.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.json as pajson
import pyarrow.parquet as pq

from jobs.config import StorageConfig
from jobs.contract.schema import (
    CONTRACT_COLUMNS,
    CONTRACT_SCHEMA,
    EVENT_TYPES,
    REASON,
    REQUIRED,
    SOURCE,
    SUFFIXES,
    TS_RAW,
    TS_TYPE,
    canonical_schema,
)
from jobs.errors import UserError
from jobs.storage import check_bucket, exists, filesystem_for, fs_path, list_files, with_scheme

log = logging.getLogger(__name__)

FILE_PATH = "path"  # the column Ray Data's include_paths adds: the file as its filesystem names it


@dataclass
class InputFile:
    path: str
    kind: str  # "parquet" | "json"
    rows: int | None = None
    columns: tuple[str, ...] = ()
    schema_key: str = ""


@dataclass
class InputPlan:
    """What the driver learned from the cheap checks: the files, grouped by format and schema."""

    files: list[InputFile]
    extra_columns: list[str] = field(default_factory=list)

    def groups(self) -> dict[tuple[str, str], list[InputFile]]:
        out: dict[tuple[str, str], list[InputFile]] = {}
        for f in self.files:
            out.setdefault((f.kind, f.schema_key), []).append(f)
        return out

    @property
    def source_prefix(self) -> str:
        """What turns a path as the filesystem names it back into the path the user gave ("s3://" or "")."""
        return with_scheme(self.files[0].path, "")


# --------------------------------------------------------------------------------------------- file checks


def plan_input(path: str, storage: StorageConfig) -> InputPlan:
    """List and cheaply check the input files; every problem is a UserError naming the path."""
    if not path:
        raise UserError("no input events given: pass --events PATH (a file, folder or glob, local or s3://).")
    check_bucket(path, storage)
    if not any(ch in path for ch in "*?[") and not exists(path, storage):
        raise UserError(f"input path {path} does not exist.")
    files = list_files(path, storage, suffixes=SUFFIXES)
    if not files:
        raise UserError(f"input path {path} holds no event files ({', '.join(SUFFIXES)}).")
    fs, _ = filesystem_for(files[0], storage)
    with ThreadPoolExecutor(max_workers=min(16, len(files))) as pool:
        checked = list(pool.map(lambda f: _check_file(f, fs), files))
    extra: set[str] = set()
    for f in checked:
        extra.update(c for c in f.columns if c not in CONTRACT_COLUMNS and c != FILE_PATH and not c.startswith("_"))
    return InputPlan(files=checked, extra_columns=sorted(extra))


def _check_file(path: str, fs: pafs.FileSystem) -> InputFile:
    if fs.get_file_info(fs_path(path)).size == 0:
        raise UserError(f"input file {path} is empty (0 bytes).")
    if ".parquet" in path.lower().rsplit("/", 1)[-1]:
        return _check_parquet(path, fs)
    records = _sample_json(path, fs)
    if not records:
        raise UserError(f"input file {path} is empty (no JSON lines).")
    keys: set[str] = set()
    for r in records:
        keys.update(r)
    missing = [c for c in REQUIRED if c not in keys]
    if missing:
        raise UserError(f"input file {path} has no required field {', '.join(missing)} in its first records.")
    return InputFile(path, "json", None, tuple(sorted(keys)), "json")


def _check_parquet(path: str, fs: pafs.FileSystem) -> InputFile:
    try:
        with fs.open_input_file(fs_path(path)) as handle:
            meta = pq.read_metadata(handle)
            schema = meta.schema.to_arrow_schema()
    except Exception as exc:  # noqa: BLE001 - any failure here means the file cannot be read
        raise UserError(
            f"input file {path} is not a readable Parquet file ({type(exc).__name__}: {str(exc)[:200]})."
        ) from None
    columns = tuple(schema.names)
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise UserError(
            f"input file {path} has no required column {', '.join(missing)} (it has: {', '.join(columns[:30])})."
        )
    key = "|".join(f"{f.name}:{f.type}" for f in schema)
    return InputFile(path, "parquet", meta.num_rows, columns, key)


def _sample_json(path: str, fs: pafs.FileSystem, max_bytes: int = 256 * 1024, max_lines: int = 500) -> list[dict]:
    try:
        # compression is detected from the extension (.gz): only the first bytes are inflated
        with fs.open_input_stream(fs_path(path), compression="detect") as handle:
            raw = handle.read(max_bytes)
    except (OSError, EOFError, pa.ArrowInvalid) as exc:
        raise UserError(f"input file {path} cannot be read ({type(exc).__name__}: {str(exc)[:200]}).") from None
    lines = raw.split(b"\n")
    if len(raw) >= max_bytes and len(lines) > 1:
        lines = lines[:-1]  # the last line may be cut
    records = []
    for number, line in enumerate(lines[:max_lines], start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise UserError(f"input file {path} is not JSON Lines: line {number} is not a JSON object.") from None
        if not isinstance(record, dict):
            raise UserError(f"input file {path} is not JSON Lines: line {number} is not a JSON object.")
        records.append(record)
    return records


# ----------------------------------------------------------------------------------------------- reading


def read_events(plan: InputPlan, storage: StorageConfig):
    """One Ray Dataset of canonical batches for all files (a union of one read per file group)."""
    import ray.data  # heavy; the serving path imports this module only for `normalise_batch`

    fs, _ = filesystem_for(plan.files[0].path, storage)
    normalise = {"extra_columns": plan.extra_columns, "source_prefix": plan.source_prefix}
    datasets = []
    for (kind, _key), files in sorted(plan.groups().items()):
        paths = [fs_path(f.path) for f in files]
        if kind == "parquet":
            ds = ray.data.read_parquet(paths, filesystem=fs, include_paths=True, file_extensions=None)
        else:
            # pyarrow's JSON reader (Ray's default) reads newline-delimited JSON; `lines=True` would switch
            # to pandas, which takes no filesystem (our S3 endpoint/credentials chain)
            ds = ray.data.read_json(paths, filesystem=fs, include_paths=True, file_extensions=None)
        datasets.append(ds.map_batches(normalise_batch, batch_format="pyarrow", batch_size=None, fn_kwargs=normalise))
    return datasets[0] if len(datasets) == 1 else datasets[0].union(*datasets[1:])


def read_events_local(plan: InputPlan, storage: StorageConfig) -> pa.Table:
    """The same reading in one process (the benchmark's baseline, small tests): pyarrow, the same normaliser."""
    fs, _ = filesystem_for(plan.files[0].path, storage)
    tables = []
    for f in plan.files:
        path = fs_path(f.path)
        if f.kind == "parquet":
            table = pq.read_table(path, filesystem=fs)
        else:
            compression = "gzip" if path.lower().endswith(".gz") else None
            with fs.open_input_stream(path, compression=compression) as handle:
                table = pajson.read_json(handle)
        table = table.append_column(FILE_PATH, pa.array([path] * table.num_rows, pa.string()))
        tables.append(normalise_batch(table, plan.extra_columns, plan.source_prefix))
    return pa.concat_tables(tables)


# ------------------------------------------------------------------------------------- batch normaliser


def coerce(column: pa.ChunkedArray | pa.Array, type_: pa.DataType) -> pa.Array:
    """Cast a column to the contract type; values that do not fit become null (never a crash)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.type == type_:
        return column
    if pa.types.is_string(type_):
        try:
            return pc.cast(column, type_)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            texts = [v if v is None or isinstance(v, str) else json.dumps(v, default=str) for v in column.to_pylist()]
            return pa.array(texts, type_)
    try:
        return pc.cast(column, type_)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        values = pd.to_numeric(pd.Series(column.to_pylist(), dtype=object), errors="coerce")
        if pa.types.is_integer(type_):
            values = values.where(values == values.round())
            return pa.array(values.astype("Int64"), type_, from_pandas=True)
        return pa.array(values.astype("float64"), type_, from_pandas=True)


def parse_ts(column: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, pa.Array]:
    """(ts as timestamp[us, UTC] with null where unparseable, raw text). Naive times are read as UTC."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_timestamp(column.type):
        raw = pc.cast(column, pa.string())
        if column.type.tz is None:
            column = pc.assume_timezone(column, "UTC")
        return pc.cast(column, TS_TYPE), raw
    if pa.types.is_date(column.type):
        return pc.cast(pc.cast(column, pa.timestamp("us")), TS_TYPE), pc.cast(column, pa.string())
    raw = coerce(column, pa.string()) if not pa.types.is_null(column.type) else pa.nulls(len(column), pa.string())
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        return pa.nulls(len(column), TS_TYPE), raw  # a number is not a contract timestamp
    series = pd.Series(raw.to_numpy(zero_copy_only=False), dtype=object)
    parsed = pd.to_datetime(series, errors="coerce", utc=True, format="ISO8601")
    return pa.array(parsed.astype("datetime64[us, UTC]"), TS_TYPE, from_pandas=True), raw


def normalise_batch(batch: pa.Table, extra_columns: list[str], source_prefix: str = "") -> pa.Table:
    """One raw batch -> the canonical schema, with `_reason` set on rows that break the contract.

    `source_prefix` goes in front of the file paths of the `path` column (see `InputPlan.source_prefix`).
    """
    n = batch.num_rows
    names = set(batch.column_names)
    arrays: dict[str, pa.Array] = {}
    for f in CONTRACT_SCHEMA:
        if f.name == "ts":
            continue
        arrays[f.name] = coerce(batch.column(f.name), f.type) if f.name in names else pa.nulls(n, f.type)
    if "ts" in names:
        ts, ts_raw = parse_ts(batch.column("ts"))
    else:
        ts, ts_raw = pa.nulls(n, TS_TYPE), pa.nulls(n, pa.string())
    arrays["ts"] = ts
    for c in extra_columns:
        arrays[c] = coerce(batch.column(c), pa.string()) if c in names else pa.nulls(n, pa.string())
    if FILE_PATH in names:
        source = coerce(batch.column(FILE_PATH), pa.string())
        if source_prefix:
            source = pc.binary_join_element_wise(pa.scalar(source_prefix), source, "")
    else:
        source = pa.nulls(n, pa.string())
    # Trim the ids the row rules look at; empty strings are missing values.
    for c in ("event_id", "partner_id", "event_type"):
        trimmed = pc.utf8_trim_whitespace(arrays[c])
        arrays[c] = pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed)
    reason = pa.nulls(n, pa.string())
    checks = [
        ("missing_event_id", pc.is_null(arrays["event_id"])),
        ("missing_ts", pc.or_(pc.is_null(ts_raw), pc.equal(pc.fill_null(pc.utf8_trim_whitespace(ts_raw), ""), ""))),
        ("missing_partner_id", pc.is_null(arrays["partner_id"])),
        ("missing_event_type", pc.is_null(arrays["event_type"])),
        ("unparseable_ts", pc.is_null(ts)),
        ("unknown_event_type", pc.invert(pc.is_in(arrays["event_type"], pa.array(EVENT_TYPES)))),
    ]
    for name, mask in checks:
        mask = pc.fill_null(mask, True)
        reason = pc.if_else(pc.and_(pc.is_null(reason), mask), pa.scalar(name), reason)
    arrays[SOURCE] = source
    arrays[REASON] = reason
    arrays[TS_RAW] = ts_raw
    schema = canonical_schema(extra_columns)
    return pa.table([arrays[f.name] for f in schema], schema=schema)
