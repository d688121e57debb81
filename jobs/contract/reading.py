"""The input contract: schema, file checks, per-batch normalisation to one schema, row rules, quarantine.

Files are checked cheaply on the driver before anything runs (size, Parquet footer, the first JSON lines):
a missing path or bucket, an empty file, a corrupt Parquet file or a file without a required column is a
`UserError` naming the file. Rows are then read by Ray Data (one read per group of files with the same
schema, explicit file lists) and every batch is normalised to one canonical schema: contract columns
typed, extra columns carried through as strings, plus `_source_file` and `_reason` (null for a valid row).
Duplicates of `(partner_id, event_id)` are found after a hash shuffle on that key (`dedupe`).

The set of extra columns is fixed up front: Parquet footers give it exactly; for JSON Lines it is the keys
of each file's first records (256 KiB / 500 lines), so a key that first appears later in a file is dropped.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs import io
from jobs.config import StorageConfig
from jobs.contract.schema import CONTRACT_COLUMNS, CONTRACT_SCHEMA, EVENT_TYPES, REQUIRED, SUFFIXES, TS_TYPE
from jobs.errors import UserError

log = logging.getLogger(__name__)

# Internal columns added while reading; dropped before events_resolved is written.
SOURCE = "_source_file"
REASON = "_reason"
TS_RAW = "_ts_raw"
_RAY_PATH = "path"  # what Ray Data's include_paths adds

REASONS = ("missing_event_id", "missing_ts", "missing_partner_id", "missing_event_type", "unparseable_ts",
           "unknown_event_type", "duplicate_event_id")


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


def canonical_schema(extra_columns: list[str]) -> pa.Schema:
    """The schema of every normalised batch (and so of events_resolved before persona_id)."""
    fields = list(CONTRACT_SCHEMA) + [pa.field(c, pa.string()) for c in extra_columns]
    return pa.schema(fields + [pa.field(SOURCE, pa.string()), pa.field(REASON, pa.string()), pa.field(TS_RAW, pa.string())])


def quarantine_schema(extra_columns: list[str]) -> pa.Schema:
    base = canonical_schema(extra_columns)
    fields = [f for f in base if f.name not in (SOURCE, REASON, TS_RAW)]
    return pa.schema(fields + [pa.field("ts_raw", pa.string()), pa.field("reason", pa.string()),
                               pa.field("source_file", pa.string())])


# --------------------------------------------------------------------------------------------- file checks

def plan_input(path: str, storage: StorageConfig) -> InputPlan:
    """List and cheaply check the input files; every problem is a UserError naming the path."""
    if not path:
        raise UserError("no input events given: pass --events PATH (a file, folder or glob, local or s3://).")
    io.check_bucket(path, storage)
    if not any(ch in path for ch in "*?[") and not io.exists(path, storage):
        raise UserError(f"input path {path} does not exist.")
    files = io.list_files(path, storage, suffixes=SUFFIXES)
    if not files:
        raise UserError(f"input path {path} holds no event files ({', '.join(SUFFIXES)}).")
    fs, _ = io.filesystem_for(files[0], storage)
    with ThreadPoolExecutor(max_workers=min(16, len(files))) as pool:
        checked = list(pool.map(lambda f: _check_file(f, fs), files))
    extra: set[str] = set()
    for f in checked:
        extra.update(c for c in f.columns if c not in CONTRACT_COLUMNS and c != _RAY_PATH and not c.startswith("_"))
    return InputPlan(files=checked, extra_columns=sorted(extra))


def _fs_path(path: str) -> str:
    return path[len("s3://"):] if io.is_s3(path) else path


def _check_file(path: str, fs) -> InputFile:
    p = _fs_path(path)
    info = fs.get_file_info(p)
    if info.size == 0:
        raise UserError(f"input file {path} is empty (0 bytes).")
    kind = "parquet" if ".parquet" in path.lower().rsplit("/", 1)[-1] else "json"
    if kind == "parquet":
        try:
            with fs.open_input_file(p) as handle:
                meta = pq.read_metadata(handle)
                schema = meta.schema.to_arrow_schema()
        except Exception as exc:  # noqa: BLE001 - any failure here means the file cannot be read
            raise UserError(f"input file {path} is not a readable Parquet file ({type(exc).__name__}: "
                            f"{str(exc)[:200]}).") from None
        columns = tuple(schema.names)
        missing = [c for c in REQUIRED if c not in columns]
        if missing:
            raise UserError(f"input file {path} has no required column {', '.join(missing)} "
                            f"(it has: {', '.join(columns[:30])}).")
        key = "|".join(f"{f.name}:{f.type}" for f in schema)
        return InputFile(path, "parquet", meta.num_rows, columns, key)
    records = _sample_json(path, fs, p)
    if not records:
        raise UserError(f"input file {path} is empty (no JSON lines).")
    keys: set[str] = set()
    for r in records:
        keys.update(r)
    missing = [c for c in REQUIRED if c not in keys]
    if missing:
        raise UserError(f"input file {path} has no required field {', '.join(missing)} in its first records.")
    return InputFile(path, "json", None, tuple(sorted(keys)), "json")


def _sample_json(path: str, fs, p: str, max_bytes: int = 256 * 1024, max_lines: int = 500) -> list[dict]:
    try:
        # compression is detected from the extension (.gz): only the first bytes are inflated
        with fs.open_input_stream(p, compression="detect") as handle:
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


# ---------------------------------------------------------------------------------------- reading (Ray)

def read_events(plan: InputPlan, storage: StorageConfig):
    """One Ray Dataset of canonical batches for all files (a union of one read per file group)."""
    import ray.data

    fs, _ = io.filesystem_for(plan.files[0].path, storage)
    datasets = []
    for (kind, _key), files in sorted(plan.groups().items()):
        paths = [_fs_path(f.path) for f in files]
        if kind == "parquet":
            ds = ray.data.read_parquet(paths, filesystem=fs, include_paths=True, file_extensions=None)
        else:
            # pyarrow's JSON reader (Ray's default) reads newline-delimited JSON; `lines=True` would switch
            # to pandas, which takes no filesystem (our S3 endpoint/credentials chain)
            ds = ray.data.read_json(paths, filesystem=fs, include_paths=True, file_extensions=None)
        scheme = "s3://" if io.is_s3(plan.files[0].path) else ""
        datasets.append(ds.map_batches(normalise_batch, batch_format="pyarrow", batch_size=None,
                                       fn_kwargs={"extra_columns": plan.extra_columns, "scheme": scheme}))
    return datasets[0] if len(datasets) == 1 else datasets[0].union(*datasets[1:])


def read_events_local(plan: InputPlan, storage: StorageConfig) -> pa.Table:
    """The same reading in one process (benchmark baseline, small tests): pyarrow readers, same normaliser."""
    import pyarrow.json as pajson

    fs, _ = io.filesystem_for(plan.files[0].path, storage)
    scheme = "s3://" if io.is_s3(plan.files[0].path) else ""
    tables = []
    for f in plan.files:
        p = _fs_path(f.path)
        if f.kind == "parquet":
            t = pq.read_table(p, filesystem=fs)
        else:
            compression = "gzip" if p.lower().endswith(".gz") else None
            with fs.open_input_stream(p, compression=compression) as handle:
                t = pajson.read_json(handle)
        t = t.append_column(_RAY_PATH, pa.array([p] * t.num_rows, pa.string()))
        tables.append(normalise_batch(t, plan.extra_columns, scheme))
    return pa.concat_tables(tables)


# ------------------------------------------------------------------------------------- batch normaliser

def _null(n: int, type_: pa.DataType) -> pa.Array:
    return pa.nulls(n, type_)


def _coerce(column: pa.ChunkedArray | pa.Array, type_: pa.DataType) -> pa.Array:
    """Cast a column to the contract type; values that do not fit become null (never a crash)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.type == type_:
        return column
    if pa.types.is_string(type_):
        try:
            return pc.cast(column, type_)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return pa.array([None if v is None else (v if isinstance(v, str) else json.dumps(v, default=str))
                             for v in column.to_pylist()], type_)
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
    raw = _coerce(column, pa.string()) if not pa.types.is_null(column.type) else _null(len(column), pa.string())
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        return _null(len(column), TS_TYPE), raw  # a number is not a contract timestamp
    series = pd.Series(raw.to_numpy(zero_copy_only=False), dtype=object)
    parsed = pd.to_datetime(series, errors="coerce", utc=True, format="ISO8601")
    return pa.array(parsed.astype("datetime64[us, UTC]"), TS_TYPE, from_pandas=True), raw


def normalise_batch(batch: pa.Table, extra_columns: list[str], scheme: str = "") -> pa.Table:
    """One raw batch -> the canonical schema, with `_reason` set on rows that break the contract."""
    n = batch.num_rows
    names = set(batch.column_names)
    arrays: dict[str, pa.Array] = {}
    for f in CONTRACT_SCHEMA:
        if f.name == "ts":
            continue
        arrays[f.name] = _coerce(batch.column(f.name), f.type) if f.name in names else _null(n, f.type)
    if "ts" in names:
        ts, ts_raw = parse_ts(batch.column("ts"))
    else:
        ts, ts_raw = _null(n, TS_TYPE), _null(n, pa.string())
    arrays["ts"] = ts
    for c in extra_columns:
        arrays[c] = _coerce(batch.column(c), pa.string()) if c in names else _null(n, pa.string())
    if _RAY_PATH in names:
        src = _coerce(batch.column(_RAY_PATH), pa.string())
        if scheme:
            src = pc.binary_join_element_wise(pa.scalar(scheme), src, "")
    else:
        src = _null(n, pa.string())
    # Trim the ids the row rules look at; empty strings are missing values.
    for c in ("event_id", "partner_id", "event_type"):
        trimmed = pc.utf8_trim_whitespace(arrays[c])
        arrays[c] = pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed)
    reason = _null(n, pa.string())
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
    arrays[SOURCE] = src
    arrays[REASON] = reason
    arrays[TS_RAW] = ts_raw
    schema = canonical_schema(extra_columns)
    return pa.table([arrays[f.name] for f in schema], schema=schema)


# ------------------------------------------------------------------------------------------- row rules

def split_invalid(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(valid rows, rows with a reason)."""
    bad = pc.is_valid(table.column(REASON))
    return table.filter(pc.invert(bad)), table.filter(bad)


def dedupe(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(kept, duplicates) for rows whose (partner_id, event_id) all live in this table.

    The row kept is the first by (ts, source file, content hash): deterministic whatever the block order.
    Rows already carrying a reason are passed to the quarantine side untouched.
    """
    valid, invalid = split_invalid(table)
    if valid.num_rows == 0:
        return valid, invalid
    from jobs.raykit.shuffle import hash_columns

    key = hash_columns(valid, ["partner_id", "event_id"])
    uniq, counts = np.unique(key, return_counts=True)
    if (counts > 1).sum() == 0:
        return valid, invalid
    content_cols = [c for c in valid.column_names if c not in (REASON,)]
    content = hash_columns(valid, content_cols)
    ts = valid.column("ts").cast(pa.int64()).to_numpy(zero_copy_only=False)
    src = valid.column(SOURCE).fill_null("").to_numpy(zero_copy_only=False).astype(str)
    src_rank = np.unique(src, return_inverse=True)[1]
    order = np.lexsort((content, src_rank, ts, key))
    sorted_key = key[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = sorted_key[1:] != sorted_key[:-1]
    keep_idx = np.sort(order[first])
    dup_idx = np.sort(order[~first])
    dups = valid.take(pa.array(dup_idx))
    dups = dups.set_column(dups.schema.get_field_index(REASON), REASON,
                           pa.array(["duplicate_event_id"] * dups.num_rows, pa.string()))
    return valid.take(pa.array(keep_idx)), pa.concat_tables([invalid, dups])


def to_quarantine(rows: pa.Table, extra_columns: list[str]) -> pa.Table:
    """Quarantine rows in the output shape: contract + extra columns, ts_raw, reason, source_file."""
    schema = quarantine_schema(extra_columns)
    renamed = {TS_RAW: "ts_raw", REASON: "reason", SOURCE: "source_file"}
    cols = []
    for f in schema:
        src = next((k for k, v in renamed.items() if v == f.name), f.name)
        cols.append(rows.column(src) if src in rows.column_names else _null(rows.num_rows, f.type))
    return pa.table(cols, schema=schema)


def reason_counts(rows: pa.Table) -> dict[str, int]:
    if rows.num_rows == 0:
        return {}
    col = REASON if REASON in rows.column_names else "reason"
    counts = pc.value_counts(rows.column(col).combine_chunks())
    return {v["values"].as_py(): v["counts"].as_py() for v in counts}
