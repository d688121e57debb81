"""Reading the input: cheap file checks, then rows normalised to one canonical schema; one bad line costs
that line, never the file or the run.

Files are checked cheaply on the driver before anything runs (size, Parquet footer, the first JSON lines):
a missing path or bucket, a corrupt Parquet file, a Parquet file without a required column or a JSON file
none of whose first lines is a JSON object is a `UserError` naming the file (`plan_input`). A 0-byte file
is listed in `InputPlan.empty_files` (a warning in the stage's figures) and skipped.

JSON Lines (`read_json_lines`) are read as a stream of blocks of whole lines: each block is parsed by
pyarrow's JSON reader (fast path) and, when that fails or the rows do not match the lines, line by line
(only that block), so each bad line becomes one quarantined row with its file, line number, raw text
(bytes that are not UTF-8 escaped as \\xNN) and reason: `unparseable_json` (not a JSON object),
`invalid_utf8`, `line_too_long` (past `MAX_LINE_BYTES`). Rows in (non-blank lines) = rows out, always.

Every batch is then normalised to the canonical schema (`normalise_batch`): contract columns typed by the
one declared coercion (`jobs.contract.schema.COERCION`), extra columns carried through as strings, plus the
internal columns (source file, reason, ts as written, line, raw text). Extra columns are every key seen in
any row (`read_events` unions the blocks' columns; nothing is sampled). The row rules after that
(duplicates, quarantine) are in `jobs.contract.rows`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.json as pajson
import pyarrow.parquet as pq

from jobs.arrays import spread, whole
from jobs.config import StorageConfig
from jobs.contract.schema import (
    CONTRACT_COLUMNS,
    CONTRACT_SCHEMA,
    CONTROL_CHARACTERS,
    EVENT_TYPES,
    INTERNAL_COLUMNS,
    LINE,
    MAX_LINE_BYTES,
    RAW,
    RAW_KEEP_BYTES,
    REASON,
    REQUIRED,
    SOURCE,
    SUFFIXES,
    TS_RAW,
    TS_TYPE,
    canonical_schema,
    coerce,
)
from jobs.errors import UserError
from jobs.raykit.session import task_progress
from jobs.storage import check_bucket, exists, filesystem_for, fs_path, list_files, with_scheme
from jobs.storage.files import byte_runs, run_count

log = logging.getLogger(__name__)

FILE_PATH = "path"  # the file a row came from, as its filesystem names it
READ_CHUNK_BYTES = 16 << 20  # JSON Lines are read in blocks of about this many bytes of whole lines
# Input bytes (as stored) per Ray read task: several files a task, so blocks are few (Ray Data's default of
# at least 200 read blocks made 216 blocks of ~1 MiB of 24 Parquet files at 1M events), and every later step
# pays Ray's per-task cost per block.
READ_TASK_BYTES = 64 << 20
PARQUET_BATCH_ROWS = 1 << 18  # rows of a Parquet file normalised at once (~100 MiB in memory at most)
BLOCK_BYTES = 128 << 20  # a read block's size in memory, at most about (Ray Data's target_max_block_size)
# pyarrow's JSON parser recurses: a line nested some 20,000 levels deep crashes the process. A block that may
# hold a line nested deeper than this is parsed line by line (Python's json stops at its recursion limit).
SAFE_DEPTH = 2000
SPLIT_BELOW_LINES = 512  # a block pyarrow cannot read is halved down to about this many lines
BOM = b"\xef\xbb\xbf"
TsRange = tuple[dt.datetime, dt.datetime]


def plausible_ts_range(plausible_from: dt.date, run_date: dt.date) -> TsRange:
    """The times a row may carry for a run dated `run_date`: from `input.plausible_ts_from` to the end of the
    day after the run date (UTC), inclusive; a row outside is quarantined as `implausible_ts`."""
    low = dt.datetime.combine(plausible_from, dt.time(), dt.timezone.utc)
    high = dt.datetime.combine(run_date + dt.timedelta(days=2), dt.time(), dt.timezone.utc)
    return low, high - dt.timedelta(microseconds=1)


def earliest_run_date(last_event: dt.date) -> dt.date:
    """The first run date whose plausible range (`plausible_ts_range`) holds an event on `last_event`."""
    return last_event - dt.timedelta(days=1)


@dataclass
class InputFile:
    path: str
    kind: str  # "parquet" | "json"
    rows: int | None = None
    columns: tuple[str, ...] = ()
    size: int = 0  # bytes as stored (compressed where the file is)


@dataclass
class InputPlan:
    """What the driver learned from the cheap checks: the files, their formats and columns.

    `extra_columns` are those of the Parquet footers; JSON keys are discovered while reading (`read_events`).
    """

    files: list[InputFile]
    extra_columns: list[str] = field(default_factory=list)
    empty_files: list[str] = field(default_factory=list)

    @property
    def source_prefix(self) -> str:
        """What turns a path as the filesystem names it back into the path the user gave ("s3://" or "")."""
        return with_scheme(self.files[0].path, "")


def extra_columns_of(names: list[str] | tuple[str, ...]) -> list[str]:
    """The columns of a raw batch that are carried through untouched (not contract, internal or empty)."""
    return [c for c in names if c and c not in CONTRACT_COLUMNS and c not in INTERNAL_COLUMNS and c[0] != "_"]


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
    empty = [f.path for f in checked if f.kind == "empty"]
    readable = [f for f in checked if f.kind != "empty"]
    if not readable:
        raise UserError(f"input path {path} holds only empty files ({len(empty)} of 0 bytes): no events to read.")
    extra: set[str] = set()
    for f in readable:
        if f.kind == "parquet":
            extra.update(extra_columns_of([c for c in f.columns if c != FILE_PATH]))
    return InputPlan(files=readable, extra_columns=sorted(extra), empty_files=empty)


def _check_file(path: str, fs: pafs.FileSystem) -> InputFile:
    size = fs.get_file_info(fs_path(path)).size
    if size == 0:
        return InputFile(path, "empty")
    if ".parquet" in path.lower().rsplit("/", 1)[-1]:
        return dataclasses.replace(_check_parquet(path, fs), size=size)
    records, lines = _sample_json(path, fs)
    if lines and not records:
        raise UserError(
            f"input file {path} is not JSON Lines: none of its first {lines} lines is a JSON object "
            "(one JSON object per line is expected)."
        )
    keys: set[str] = set()
    for r in records:
        keys.update(r)
    missing = [c for c in REQUIRED if c not in keys]
    if records and missing:
        raise UserError(
            f"input file {path} has no required field {', '.join(missing)} in any of its first {len(records)} records."
        )
    return InputFile(path, "json", None, tuple(sorted(keys)), size)


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
    return InputFile(path, "parquet", meta.num_rows, columns)


def _sample_json(path: str, fs: pafs.FileSystem, max_bytes: int = 256 * 1024, max_lines: int = 200):
    """(JSON objects among the first lines, non-blank lines looked at): a format check, not a schema."""
    try:
        # compression is detected from the extension (.gz): only the first bytes are inflated
        with fs.open_input_stream(fs_path(path), compression="detect") as handle:
            raw = handle.read(max_bytes).removeprefix(BOM)
    except (OSError, EOFError, pa.ArrowInvalid) as exc:
        raise UserError(f"input file {path} cannot be read ({type(exc).__name__}: {str(exc)[:200]}).") from None
    lines = raw.split(b"\n")
    if len(raw) >= max_bytes and len(lines) > 1:
        lines = lines[:-1]  # the last line may be cut (a first line longer than the sample is not judged)
    lines = [line for line in lines if line.strip()][:max_lines]
    if len(raw) >= max_bytes and len(lines) <= 1:
        return [], 0
    records = [record for record, reason in map(_parse_line, lines) if reason is None]
    return records, len(lines)


# ----------------------------------------------------------------------------------- JSON Lines blocks


def read_json_lines(stream, chunk_bytes: int = READ_CHUNK_BYTES) -> Iterator[pa.Table]:
    """Raw tables (JSON types as parsed, plus `_line`, and `_reason`/`_raw` on lines that are not rows).

    Reads `stream` (a binary file object) in blocks of whole lines; a line longer than `MAX_LINE_BYTES` is
    skipped to its end without holding it and becomes one `line_too_long` row. Blank lines are not rows.
    """
    line = 1
    rest = b""
    overlong: list | None = None  # [line number, first bytes, size] of a line being skipped
    first = True
    while True:
        data = stream.read(chunk_bytes)
        if not data:
            break
        if first:
            data, first = data.removeprefix(BOM), False  # a UTF-8 byte order mark starts some exports
        if overlong is not None:
            end = data.find(b"\n")
            if end < 0:
                overlong[2] += len(data)
                continue
            overlong[2] += end
            yield _too_long(*overlong)
            line += 1
            overlong, data = None, data[end + 1 :]
        buffer = rest + data if rest else data
        cut = buffer.rfind(b"\n")
        if cut < 0:
            block, rest = b"", buffer
        else:
            block, rest = buffer[: cut + 1], buffer[cut + 1 :]
        if block:
            lines = block.count(b"\n")  # the block ends with one
            yield from parse_block(block, line, lines)
            line += lines
        if len(rest) > MAX_LINE_BYTES:
            overlong, rest = [line, rest[:RAW_KEEP_BYTES], len(rest)], b""
    if overlong is not None:
        yield _too_long(*overlong)
    elif rest.strip():
        yield from parse_block(rest, line)


def parse_block(block: bytes, first_line: int, lines: int | None = None) -> list[pa.Table]:
    """Whole lines -> raw tables with `_line`: pyarrow's reader first; a block it cannot read is halved (at a
    line end) until the halves are read or are small, and only a small part holding a bad line goes line by
    line. Halves may type a column differently: each is its own table (the normaliser types them alike)."""
    expected = expected_lines(block) if lines is None else lines
    table = _read_with_pyarrow(block, expected)
    if table is not None:
        return [table.append_column(LINE, pa.array(np.arange(first_line, first_line + expected, dtype=np.int64)))]
    middle = block.find(b"\n", len(block) // 2)
    if expected <= SPLIT_BELOW_LINES or middle < 0 or middle == len(block) - 1:
        return [parse_lines(block, first_line)]
    left, right = block[: middle + 1], block[middle + 1 :]
    return parse_block(left, first_line) + parse_block(right, first_line + expected_lines(left))


def expected_lines(block: bytes) -> int:
    return block.count(b"\n") + (0 if block.endswith(b"\n") else 1)


def _read_with_pyarrow(block: bytes, expected: int) -> pa.Table | None:
    """The block as pyarrow reads it, or None where it must not or cannot (or its rows are not the lines)."""
    # pyarrow's reader is only handed lines that start an object: a file of `null` then `[["a", null]]`
    # crashes it (pyarrow 26: a segmentation fault); blank lines also take the line-by-line path
    objects = block.count(b"\n{") + block.startswith(b"{")
    if objects != expected or _needs_line_by_line(block):
        return None
    try:
        table = pajson.read_json(pa.BufferReader(block), read_options=pajson.ReadOptions(block_size=MAX_LINE_BYTES))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, UnicodeDecodeError):
        return None
    if table.num_rows != expected:  # several objects on a line: number them one by one
        return None
    if any(pa.types.is_nested(f.type) for f in table.schema):
        # objects and lists become JSON text (or bad_type) either way; pyarrow's nested columns of nulls are
        # malformed arrays in some versions, so those blocks go line by line
        return None
    return table


def _needs_line_by_line(block: bytes) -> bool:
    """Whether pyarrow must not parse this block: bytes that are not UTF-8 (it would keep them), a line past
    MAX_LINE_BYTES, or one nested past SAFE_DEPTH. Both need a line longer than 2 * SAFE_DEPTH bytes, which
    covers a whole window of SAFE_DEPTH bytes without a newline: a cheap scan; only then are lines looked at."""
    if not block.isascii():
        try:
            block.decode("utf-8")
        except UnicodeDecodeError:
            return True
    step = SAFE_DEPTH
    if all(block.find(b"\n", start, start + step) >= 0 for start in range(0, len(block) - step + 1, step)):
        return False
    return any(
        len(line) > MAX_LINE_BYTES or line.count(b"[") + line.count(b"{") > SAFE_DEPTH
        for line in block.split(b"\n")
        if len(line) > 2 * step
    )


def parse_lines(block: bytes, first_line: int) -> pa.Table:
    """Line by line: a row per non-blank line; a line that is not a JSON object is a row with a reason."""
    records: list[dict] = []
    numbers: list[int] = []
    reasons: list[str | None] = []
    raws: list[str | None] = []
    for offset, line in enumerate(block.split(b"\n")):
        if not line.strip():
            continue
        record, reason = _parse_line(line)
        records.append(record)
        numbers.append(first_line + offset)
        reasons.append(reason)
        raws.append(escape_raw(line))  # kept by `normalise_batch` only for rows with a reason
    keys: dict[str, None] = {}
    for r in records:
        keys.update(dict.fromkeys(r))
    columns: dict[str, pa.Array] = {}
    for key in keys:
        array, nested = _json_column([r.get(key) for r in records])
        columns[key] = array
        if key in CONTRACT_COLUMNS and nested is not None:
            # a mixed column of objects/lists and scalars: the objects are bad values of a contract column
            reasons = [f"bad_type:{key}" if bad and r is None else r for r, bad in zip(reasons, nested)]
    columns[LINE] = pa.array(numbers, pa.int64())
    columns[REASON] = pa.array(reasons, pa.string())
    columns[RAW] = pa.array(raws, pa.string())
    return pa.table(columns)


def _parse_line(line: bytes) -> tuple[dict, str | None]:
    if len(line) > MAX_LINE_BYTES:
        return {}, "line_too_long"
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return {}, "invalid_utf8"
    try:
        record = json.loads(text)  # NaN and Infinity are read (as pyarrow does): a bad number, not a bad line
    except (ValueError, RecursionError):
        return {}, "unparseable_json"
    if not isinstance(record, dict):
        return {}, "unparseable_json"
    if "\\u" in text.lower():
        try:  # an escaped lone surrogate (\ud800) is no character: the line is not valid Unicode
            json.dumps(record, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return {}, "invalid_utf8"
    return record, None


def _json_column(values: list) -> tuple[pa.Array, list[bool] | None]:
    """(the column as pyarrow types it, None) or, when its values mix types or nest, (JSON text, which nest)."""
    kinds = {type(v) for v in values if v is not None}
    if not kinds & {dict, list} and not (bool in kinds and len(kinds) > 1):  # pyarrow would read true as 1
        try:
            return pa.array(values), None
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            pass
    nested = [isinstance(v, (dict, list)) for v in values]
    texts = [v if v is None or isinstance(v, str) else json.dumps(v, ensure_ascii=False) for v in values]
    return pa.array(texts, pa.string()), nested


def _too_long(line: int, head: bytes, size: int) -> pa.Table:
    return pa.table(
        {
            LINE: pa.array([line], pa.int64()),
            REASON: pa.array(["line_too_long"], pa.string()),
            RAW: pa.array([escape_raw(head, size)], pa.string()),
        }
    )


def escape_raw(line: bytes, size: int | None = None) -> str:
    """A line's raw text for the quarantine: bytes that are not UTF-8 escaped as \\xNN; a line longer than
    RAW_KEEP_BYTES (or `size`, the length of a line of which only the start was kept) is cut and says so."""
    size = len(line) if size is None else size
    text = line[:RAW_KEEP_BYTES].decode("utf-8", "backslashreplace")
    return text if size <= RAW_KEEP_BYTES else f"{text}... ({size} bytes)"


# ----------------------------------------------------------------------------------------------- reading


@dataclass
class ReadEvents:
    """The input as Ray holds it after `read_events`."""

    partitions: list  # canonical rows, hash-partitioned by the keys asked for (`Pieces`, for `map_exchange`)
    rows: int  # rows read (valid or not)
    extra_columns: list[str]


def read_events(
    plan: InputPlan,
    storage: StorageConfig,
    ts_range: TsRange | None,
    keys: Sequence[str],
    num_partitions: int,
) -> ReadEvents:
    """Every file read by Ray tasks into canonical rows on one schema, hash-partitioned by `keys`.

    Files are read by a few tasks of several whole files each (`read_tasks`, `file_groups`), so every later
    step pays Ray's task cost few times. Each task hash-splits every block it makes (up to `BLOCK_BYTES`)
    and streams the pieces into the object store as it goes, then the blocks' column names and rows; the
    next step's tasks concatenate each partition's pieces (`jobs.raykit.shuffle.Pieces`). A block is thus
    stored once, as its pieces, and no task reads it again to split it, gather it or learn its columns.
    Plain tasks, not a Ray Data read: that paid a streaming executor's start-up and its first second of one
    task at a time, and its actors' worker processes (1-3 s on 2 cores at any size). The extra columns are
    every key any row carried; a piece whose block lacks some gets them as nulls.
    """
    import ray  # heavy; the serving path imports this module only for `normalise_batch`

    from jobs.raykit.shuffle import scattered_partitions

    cpus = int(ray.cluster_resources().get("CPU", 1))
    reader = ray.remote(num_returns="streaming")(_read_files)
    streams = [
        reader.remote(
            [(f.path, f.kind) for f in group],
            storage,
            plan.extra_columns,
            plan.source_prefix,
            ts_range,
            list(keys),
            num_partitions,
        )
        for group in file_groups(plan.files, read_tasks(plan.files, cpus))
    ]
    pieces: list[list] = []  # per block, its pieces
    shape_refs = []
    with task_progress("read", len(streams)) as bar:
        for stream in streams:
            *piece_refs, shape = list(stream)
            pieces += [piece_refs[i : i + num_partitions] for i in range(0, len(piece_refs), num_partitions)]
            shape_refs.append(shape)
            bar.update()
    shapes = [block for stream_shapes in ray.get(shape_refs) for block in stream_shapes]
    extra = sorted({c for names, _ in shapes for c in extra_columns_of(names)})
    target = canonical_schema(extra).names
    conform_remote = ray.remote(num_cpus=0.25)(conform)
    pieces = [
        block if names == target else [conform_remote.remote(p, extra) for p in block]
        for block, (names, _) in zip(pieces, shapes)
    ]
    return ReadEvents(scattered_partitions(pieces, num_partitions), sum(rows for _, rows in shapes), extra)


def read_tasks(files: list[InputFile], cpus: int, task_bytes: int = READ_TASK_BYTES) -> int:
    """How many Ray read tasks for these files: one per `task_bytes` of input, at least two per CPU (so no
    core idles while the last task runs), at most one per file (a task reads whole files)."""
    return run_count([f.size for f in files], 2 * cpus, task_bytes)


def file_groups(files: list[InputFile], tasks: int) -> list[list[InputFile]]:
    """The files in `tasks` runs of consecutive files of about the same bytes (none empty)."""
    return [[files[i] for i in run] for run in byte_runs([f.size for f in files], tasks)]


def _read_files(
    files: list[tuple[str, str]],
    storage: StorageConfig,
    extra_columns: list[str],
    source_prefix: str,
    ts_range: TsRange | None,
    keys: list[str],
    num_partitions: int,
) -> Iterator:
    """A read task: its files as canonical blocks of up to about `BLOCK_BYTES` (small files share one), each
    yielded as its `num_partitions` hash pieces by `keys`; last, (column names, rows) of every block."""
    from jobs.raykit.shuffle import split_by_hash

    fs, _ = filesystem_for(files[0][0], storage)
    shapes: list[tuple[list[str], int]] = []

    def pieces(tables: list[pa.Table]) -> list[pa.Table]:
        block = pa.concat_tables(tables, promote_options="default")  # a column some lack: nulls
        shapes.append((block.column_names, block.num_rows))
        return split_by_hash(block, keys, num_partitions)

    pending: list[pa.Table] = []
    pending_bytes = 0
    for path, kind in files:
        for table in read_file(fs, fs_path(path), kind, extra_columns, source_prefix, ts_range):
            pending.append(table)
            pending_bytes += table.nbytes
            if pending_bytes >= BLOCK_BYTES:
                for piece in pieces(pending):  # not `yield from`: Ray's streaming generator send()s to it
                    yield piece
                pending, pending_bytes = [], 0
    for piece in pieces(pending) if pending else []:
        yield piece
    yield shapes


def read_file(
    fs: pafs.FileSystem,
    path: str,
    kind: str,
    extra_columns: list[str],
    source_prefix: str,
    ts_range: TsRange | None,
) -> Iterator[pa.Table]:
    """One input file (`path` as `fs` names it) as canonical tables of a bounded size, whatever the file's:
    Parquet in batches of `PARQUET_BATCH_ROWS` rows, JSON Lines in chunks of `READ_CHUNK_BYTES`."""
    if kind != "parquet":
        yield from read_json_file(fs, path, source_prefix, ts_range)
        return
    with fs.open_input_file(path) as handle:
        parquet = pq.ParquetFile(handle)
        tables: Iterable[pa.Table] = [parquet.schema_arrow.empty_table()]  # no rows: still its (empty) block
        if parquet.metadata.num_rows:
            tables = (pa.Table.from_batches([b]) for b in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS))
        for table in tables:
            table = table.append_column(FILE_PATH, pa.repeat(pa.scalar(path), table.num_rows))
            yield normalise_batch(table, extra_columns, source_prefix, ts_range)


def read_events_local(plan: InputPlan, storage: StorageConfig, ts_range: TsRange | None = None) -> pa.Table:
    """The same reading in one process (the benchmark's baseline, small tests): pyarrow, the same normaliser."""
    fs, _ = filesystem_for(plan.files[0].path, storage)
    tables = [
        table
        for f in plan.files
        for table in read_file(fs, fs_path(f.path), f.kind, plan.extra_columns, plan.source_prefix, ts_range)
    ]
    extra = sorted({c for t in tables for c in extra_columns_of(t.column_names)})
    return pa.concat_tables([conform(t, extra) for t in tables])


def read_json_file(fs: pafs.FileSystem, path: str, source_prefix: str, ts_range: TsRange | None) -> list[pa.Table]:
    """One JSON Lines file (compression from its extension) -> canonical tables with its own extra columns."""
    with fs.open_input_stream(path, compression="detect") as handle:
        return list(normalise_json_blocks(handle, source_prefix + path, ts_range))


def normalise_json_blocks(stream, source: str, ts_range: TsRange | None) -> Iterator[pa.Table]:
    """Canonical tables of one JSON Lines stream; a stream that breaks off (a truncated .gz) names the file.

    Hive folders in the path (`.../day=2026-01-01/x.jsonl`) give columns to rows that lack those keys.
    """
    partitions = hive_partitions(source)
    blocks = read_json_lines(stream)
    while True:
        try:
            raw = next(blocks)
        except StopIteration:
            return
        except (OSError, EOFError, pa.ArrowInvalid) as exc:
            raise UserError(
                f"input file {source} cannot be read to its end ({type(exc).__name__}: {str(exc)[:200]}): it is "
                "corrupt or truncated (a .gz file can be checked with gzip -t)."
            ) from None
        for key, value in partitions.items():
            if key not in raw.column_names:
                raw = raw.append_column(key, pa.array(np.full(raw.num_rows, value, dtype=object), pa.string()))
            elif pa.types.is_string(raw.schema.field(key).type) or pa.types.is_null(raw.schema.field(key).type):
                filled = pc.fill_null(raw.column(key).cast(pa.string()), value)
                raw = raw.set_column(raw.schema.get_field_index(key), key, filled)
        yield normalise_batch(raw, extra_columns_of(raw.column_names), ts_range=ts_range, source_file=source)


def hive_partitions(path: str) -> dict[str, str]:
    """KEY=VALUE folders of a file's path, outermost first."""
    folders = path.split("/")[:-1]
    return dict(unquote(f).split("=", 1) for f in folders if "=" in f and not f.startswith("="))


def conform(table: pa.Table, extra_columns: list[str]) -> pa.Table:
    """A canonical table with (a subset of) these extra columns -> exactly `canonical_schema(extra_columns)`."""
    schema = canonical_schema(extra_columns)
    n = table.num_rows
    names = set(table.column_names)
    return pa.table([table.column(f.name) if f.name in names else pa.nulls(n, f.type) for f in schema], schema=schema)


# ------------------------------------------------------------------------------------- batch normaliser


def parse_ts(column: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, pa.Array | None]:
    """(ts as timestamp[us, UTC] with null where unparseable, raw text). Naive times are read as UTC.

    The raw text is None for a column already in the contract's type: its text is `ts_text` of the ts, made
    only for the rows that need it (those quarantined), not for every row the job reads.
    """
    column = whole(column)
    if column.type == TS_TYPE:
        return column, None
    if pa.types.is_timestamp(column.type):
        raw = ts_text(column)
        if column.type.tz is None:
            column = pc.assume_timezone(column, "UTC")
        return pc.cast(column, TS_TYPE), raw
    if pa.types.is_date(column.type):
        return pc.cast(pc.cast(column, pa.timestamp("us")), TS_TYPE), pc.cast(column, pa.string())
    if pa.types.is_null(column.type):
        return pa.nulls(len(column), TS_TYPE), pa.nulls(len(column), pa.string())
    raw = _as_text(column)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return pa.nulls(len(column), TS_TYPE), raw  # a number (or an object) is not a contract timestamp
    series = pd.Series(raw.to_numpy(zero_copy_only=False), dtype=object)
    parsed = pd.to_datetime(series, errors="coerce", utc=True, format="ISO8601")
    return pa.array(parsed.astype("datetime64[us, UTC]"), TS_TYPE, from_pandas=True), raw


def ts_text(column: pa.Array) -> pa.Array:
    """A timestamp column as Arrow's text of it. For UTC that is the wall time and "Z", which Arrow writes
    12x faster from the zone-less values than through its time zone database."""
    if column.type.tz == "UTC":
        wall = pc.cast(column.cast(pa.timestamp(column.type.unit)), pa.string())
        return pc.binary_join_element_wise(wall, pa.scalar("Z"), "")
    return pc.cast(column, pa.string())


def _as_text(column: pa.Array) -> pa.Array:
    """Any column as strings: scalars cast, objects and lists as their JSON text (extra columns, raw ts)."""
    if pa.types.is_nested(column.type):
        return pa.array([None if v is None else json.dumps(v, default=str) for v in column.to_pylist()], pa.string())
    values, _ = coerce(column, pa.string())
    return values


def normalise_batch(
    batch: pa.Table,
    extra_columns: list[str],
    source_prefix: str = "",
    ts_range: TsRange | None = None,
    source_file: str | None = None,
) -> pa.Table:
    """One raw batch -> the canonical schema, with `_reason` set on rows that break the contract.

    The source file is `source_file`, else `source_prefix` + the `path` column (see
    `InputPlan.source_prefix`). A `_reason` already in the batch (a line the JSON reader could not parse)
    comes first; then, in this order: bad_type:COLUMN, missing_*, control_characters, unparseable_ts,
    implausible_ts (outside `ts_range`, inclusive), unknown_event_type. A row with a reason keeps its raw text
    (`_raw`: the line as read, else the row as JSON).
    """
    n = batch.num_rows
    names = set(batch.column_names)
    arrays: dict[str, pa.Array] = {}
    reasons: list[tuple[str, pa.Array]] = []
    present_strings = []
    for f in CONTRACT_SCHEMA:
        if f.name == "ts":
            continue
        if f.name not in names:
            arrays[f.name] = pa.nulls(n, f.type)
            continue
        arrays[f.name], bad = coerce(batch.column(f.name), f.type)
        if bad.true_count:  # most columns of most batches: nothing to mark
            reasons.append((f"bad_type:{f.name}", bad))
        if pa.types.is_string(f.type):
            present_strings.append(f.name)
    if "ts" in names:
        ts, ts_raw = parse_ts(batch.column("ts"))
    else:
        ts, ts_raw = pa.nulls(n, TS_TYPE), pa.nulls(n, pa.string())
    ts_missing = (
        pc.is_null(ts)
        if ts_raw is None
        else pc.or_(pc.is_null(ts_raw), pc.equal(pc.fill_null(pc.utf8_trim_whitespace(ts_raw), ""), ""))
    )
    arrays["ts"] = ts
    for c in extra_columns:
        arrays[c] = _as_text(batch.column(c)) if c in names else pa.nulls(n, pa.string())
    if source_file is not None:
        source = pa.array(np.full(n, source_file, dtype=object), pa.string())
    elif FILE_PATH in names:
        source = coerce(batch.column(FILE_PATH), pa.string())[0]
        if source_prefix:
            source = pc.binary_join_element_wise(pa.scalar(source_prefix), source, "")
    else:
        source = pa.nulls(n, pa.string())
    # Trim the ids the row rules look at; empty strings are missing values.
    for c in ("event_id", "partner_id", "event_type"):
        trimmed = pc.utf8_trim_whitespace(arrays[c])
        arrays[c] = pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed)
    control = None
    for c in present_strings:
        if not _may_hold_control_characters(arrays[c]):
            continue
        found = pc.fill_null(pc.match_substring_regex(arrays[c], CONTROL_CHARACTERS), False)
        control = found if control is None else pc.or_(control, found)
    reasons += [
        ("missing_event_id", pc.is_null(arrays["event_id"])),
        ("missing_ts", ts_missing),
        ("missing_partner_id", pc.is_null(arrays["partner_id"])),
        ("missing_event_type", pc.is_null(arrays["event_type"])),
    ]
    if control is not None:
        reasons.append(("control_characters", control))
    reasons.append(("unparseable_ts", pc.is_null(ts)))
    if ts_range is not None:
        low, high = (pa.scalar(t, TS_TYPE) for t in ts_range)
        reasons.append(("implausible_ts", pc.or_(pc.less(ts, low), pc.greater(ts, high))))
    reasons.append(("unknown_event_type", pc.invert(pc.is_in(arrays["event_type"], pa.array(EVENT_TYPES)))))
    reason = whole(batch.column(REASON)) if REASON in names else pa.nulls(n, pa.string())
    for name, mask in reasons:
        mask = pc.fill_null(mask, True)
        reason = pc.if_else(pc.and_(pc.is_null(reason), mask), pa.scalar(name), reason)
    arrays[SOURCE] = source
    arrays[REASON] = reason
    arrays[TS_RAW] = _text_where(ts, pc.is_valid(reason)) if ts_raw is None else ts_raw
    arrays[LINE] = whole(batch.column(LINE)) if LINE in names else pa.nulls(n, pa.int64())
    arrays[RAW] = _raw_text(batch, reason)
    schema = canonical_schema(extra_columns)
    return pa.table([arrays[f.name] for f in schema], schema=schema)


def _text_where(ts: pa.Array, wanted: pa.Array) -> pa.Array:
    """`ts_text` of the rows where `wanted` is true, null elsewhere (Arrow's text of a timestamp costs ~1 us a
    row: the usual batch has no row to write it for)."""
    rows = np.flatnonzero(wanted.to_numpy(zero_copy_only=False))
    if len(rows) == 0:
        return pa.nulls(len(ts), pa.string())
    return spread(ts_text(ts.take(pa.array(rows))), rows, len(ts))


def fill_ts_text(table: pa.Table) -> pa.Table:
    """A canonical table whose `_ts_raw` is the raw text on every row (rows the reader left without it are
    those whose raw text is their ts's: `parse_ts`), for rows quarantined after reading (duplicates)."""
    raw = whole(table.column(TS_RAW))
    ts = whole(table.column("ts"))
    lacking = pc.and_(pc.is_null(raw), pc.is_valid(ts))
    if not pc.any(lacking).as_py():
        return table
    filled = pc.if_else(lacking, _text_where(ts, lacking), raw)
    return table.set_column(table.schema.get_field_index(TS_RAW), TS_RAW, filled)


def _may_hold_control_characters(column: pa.Array) -> bool:
    """False when no byte of the column's text is a control character (a scan of its data buffer, far cheaper
    than a regex per value); True means look closer."""
    data = column.buffers()[2]
    if data is None:
        return False
    raw = np.frombuffer(data, dtype=np.uint8)
    return bool((raw < 32).any() or (raw == 127).any())


def _raw_text(batch: pa.Table, reason: pa.Array) -> pa.Array:
    """The raw text of the rows with a reason: the line as read if the reader kept it, else the row as JSON."""
    raw = whole(batch.column(RAW)) if RAW in batch.column_names else pa.nulls(batch.num_rows, pa.string())
    raw = pc.if_else(pc.is_valid(reason), raw, pa.scalar(None, pa.string()))
    missing = np.flatnonzero(pc.and_(pc.is_valid(reason), pc.is_null(raw)).to_numpy(zero_copy_only=False))
    if len(missing) == 0:
        return raw
    columns = [c for c in batch.column_names if c not in INTERNAL_COLUMNS and c != FILE_PATH]
    picked = pa.array(missing)
    values_of = {c: batch.column(c).take(picked).to_pylist() for c in columns}
    rows = [{c: values_of[c][k] for c in columns} for k in range(len(missing))]
    values = raw.to_numpy(zero_copy_only=False).astype(object)
    values[missing] = [json.dumps(r, default=str, ensure_ascii=False)[:RAW_KEEP_BYTES] for r in rows]
    return pa.array(values, pa.string())
