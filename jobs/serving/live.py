"""Live events: validated like the batch, made durable before they are acknowledged, applied on every replica.

Intake (`intake`): the body (a JSON array or JSON Lines) goes through the batch's own line reader and
normaliser (`jobs.contract.reading.parse_lines`, `normalise_batch`), so a row is rejected online exactly when
the batch would quarantine the same line, with the same reason; a line that is not a JSON object costs that row. A
row of another partner fails the whole request (403); a `(partner_id, event_id)` already seen, or repeated
in the request, is counted as a duplicate and not stored again.

Durability (`EventLog`): accepted rows are written as one Parquet micro-batch per group commit under
`ROOT/online/events/YYYY-MM-DD/HH/MM/` (the contract's columns, so the next batch run reads the folder with
its usual `events:` setting) with an atomic write (local: temp + fsync + rename; S3: one PUT). Only then is
the request answered 202: an acknowledged event is in the log even if the replica dies the next instant.
`segments publish` compacts closed hours into one file each (`EventLog.compact`), so the next batch run reads
a few larger files; replicas list the log through `EventLog.visible`, which never returns both a micro-batch
and the compacted file holding it.

Applying (`LiveState`): the log is the truth every replica follows. A replica applies its own micro-batch
as soon as it is written, and tails the log (the last two minute folders, every `poll_events_seconds`) for
the others'; a replica that starts, or loads a new release, replays every micro-batch since the release's
cut-off. Applying is deterministic and order-free: a `(partner_id, event_id)` is applied once (the set of
applied ids), identifiers link by the same rules everywhere, and the online features are counts, sums and
maxima at the persona's latest event time (`jobs.serving.online`), so every replica converges on the same
profile whatever order the files arrive in.

Linking: an event's identifiers (normalised by the batch's `slim_events`, which also flags blocklisted and
invalid emails/phones) minus the release's junk identifiers (the run's identity_audit) are looked up as link
ids; when they point to exactly one persona, the event is that persona's and every identifier in it becomes
a lookup key of the sending partner (and a link id) for that persona. An event whose identifiers point to
two personas merges nothing (that is the next batch run's decision) and is only stored.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.config import JobConfig, ScoringConfig, SegmentConfig, StorageConfig
from jobs.contract.reading import TsRange, normalise_batch, parse_lines, plausible_ts_range
from jobs.contract.schema import CONTRACT_SCHEMA, REASON
from jobs.identity.graph import slim_events
from jobs.identity.junk import blocklists
from jobs.model.booster import load_booster, model_version
from jobs.run.layout import OnlineLayout
from jobs.segments import eligible_mask, membership
from jobs.serving.identifiers import contact_key, digest64, key_hash, link_hash
from jobs.serving.online import (
    INTENT_KINDS,
    INTENT_SOURCE,
    INTENT_WEIGHTS,
    LiveEvents,
    intent_scale,
    online_features,
    updated_features,
)
from jobs.serving.source import read_parquet_file
from jobs.storage import delete, filesystem_for, fs_path, list_files, read_bytes, subfolders, write_bytes

log = logging.getLogger(__name__)


class RequestError(Exception):
    """A request the API answers with a 4xx: `{"error": code, "detail": detail}`."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


# -------------------------------------------------------------------------------------------- intake


def parse_events(body: bytes) -> pa.Table:
    """The body as raw rows of the batch's line reader (`parse_lines`: a row per event, `_reason` on a row
    that is no JSON object, not UTF-8, too long, ...; objects and lists in a contract column are
    `bad_type:FIELD`). The body is one JSON object, a JSON array of them (each element is a line), or JSON
    Lines (each line as the batch reads a file's line)."""
    stripped = body.strip()
    if not stripped:
        raise RequestError(400, "empty_body", "the body holds no events: send a JSON array or JSON Lines")
    try:
        parsed = json.loads(stripped)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError: such a body goes line by line
        parsed = None
        block = stripped
    else:
        if not isinstance(parsed, (list, dict)):
            raise RequestError(400, "malformed_body", "the body is JSON but neither an event object nor an array")
        items = parsed if isinstance(parsed, list) else [parsed]
        if not items:
            raise RequestError(400, "empty_body", "the body holds no events: send a JSON array or JSON Lines")
        # ASCII JSON: an element's lone surrogate (\ud800) stays an escape the line reader refuses as invalid_utf8
        block = b"\n".join(json.dumps(item).encode() for item in items)
    raw = parse_lines(block, 0)
    if parsed is None and pc.all(pc.is_valid(raw.column(REASON))).as_py():
        raise RequestError(400, "malformed_body", "the body is neither JSON nor JSON Lines of event objects")
    return raw


@dataclass
class Intake:
    accepted: pa.Table  # contract columns
    duplicates: int
    rejected: list[dict]


def live_ts_range(config: JobConfig, now: dt.datetime | None = None) -> TsRange:
    """The batch's plausible timestamps for a run dated today: `input.plausible_ts_from` to the end of tomorrow
    (UTC), inclusive (`plausible_ts_range`)."""
    return plausible_ts_range(config.input.plausible_ts_from, (now or dt.datetime.now(dt.timezone.utc)).date())


def intake(body: bytes, partner_id: str, seen: set[int], max_events: int, ts_range: TsRange | None = None) -> Intake:
    """Validate a POST /v1/events body for `partner_id` (see the module docstring): each row is accepted or
    rejected with the reason the batch's reader and normaliser give the same line."""
    raw = parse_events(body)
    if raw.num_rows > max_events:
        raise RequestError(413, "too_many_events", f"{raw.num_rows} events in one request; at most {max_events}")
    table = normalise_batch(raw, extra_columns=[], ts_range=ts_range)
    reasons = table.column(REASON).to_pylist()
    partners = table.column("partner_id").to_pylist()
    foreign = [i for i, (p, r) in enumerate(zip(partners, reasons)) if p is not None and p != partner_id]
    if foreign:
        raise RequestError(
            403,
            "foreign_partner",
            f"rows {foreign[:10]} carry another partner's partner_id; a key sends only its own partner's events",
        )
    keep, duplicates, rejected = [], 0, []
    in_request: set[int] = set()
    event_ids = table.column("event_id").to_pylist()
    for i, reason in enumerate(reasons):
        if reason is not None:
            rejected.append({"index": i, "reason": reason})
            continue
        event = event_key(partner_id, event_ids[i])
        if event in seen or event in in_request:
            duplicates += 1
            continue
        in_request.add(event)
        keep.append(i)
    accepted = table.take(pa.array(keep, pa.int64())).select(CONTRACT_SCHEMA.names).cast(CONTRACT_SCHEMA)
    return Intake(accepted, duplicates, rejected)


def event_key(partner_id: str, event_id: str) -> int:
    return digest64(f"{partner_id}\x1f{event_id}")


# ------------------------------------------------------------------------------------------ the log


# compacted event files: their name's tag, the metadata key naming the micro-batches they hold, when an hour
# folder is closed (writers write into the minute they are in; a group commit lasts milliseconds), row groups
COMPACTED = "compacted"
COVERS = b"segments.covers"
COMPACT_AFTER = dt.timedelta(minutes=10)
COMPACT_ROW_GROUP = 128 * 1024


class EventLog:
    """Parquet micro-batches under ROOT/online/events/YYYY-MM-DD/HH/MM/, named `UNIXMS-WRITER-SEQ.parquet`;
    closed hours compacted into `YYYY-MM-DD/HH/UNIXMS-compacted-DIGEST.parquet` (`compact`)."""

    def __init__(self, online: OnlineLayout, storage: StorageConfig, writer: str | None = None) -> None:
        self.online, self.storage = online, storage
        self.writer = writer or uuid.uuid4().hex[:12]
        self.sequence = 0
        self.covers_cache: dict[str, tuple[str, ...]] = {}

    def folder(self, when: dt.datetime) -> str:
        return self.online.event_folder(when.strftime("%Y-%m-%d"), when.hour, when.minute)

    def write(self, table: pa.Table, now: dt.datetime | None = None) -> str:
        now = now or dt.datetime.now(dt.timezone.utc)
        self.sequence += 1
        path = f"{self.folder(now)}/{int(now.timestamp() * 1000):013d}-{self.writer}-{self.sequence:06d}.parquet"
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        write_bytes(path, sink.getvalue(), self.storage)
        return path

    def visible(self, files: list[str]) -> list[str]:
        """`files` less the micro-batches that a compacted file among them holds: a reader applies each event
        from one file only (`compact`)."""
        covered: set[str] = set()
        for path in files:
            if _is_compacted(path):
                folder = path.rsplit("/", 1)[0]
                covered.update(f"{folder}/{name}" for name in self._covers(path))
        return [path for path in files if path not in covered]

    def _covers(self, path: str) -> tuple[str, ...]:
        """The micro-batches (relative to its hour folder) a compacted file holds: its Parquet metadata, read once
        (a compacted file never changes)."""
        if path not in self.covers_cache:
            fs, _ = filesystem_for(path, self.storage)
            metadata = pq.read_schema(fs_path(path), filesystem=fs).metadata or {}
            self.covers_cache[path] = tuple(json.loads(metadata.get(COVERS, b"[]")))
        return self.covers_cache[path]

    def compact(self, now: dt.datetime | None = None) -> dict[str, int]:
        """Rewrite the micro-batches of each closed hour folder (`COMPACT_AFTER` past its hour) as one Parquet
        file, `HH/UNIXMS-compacted-DIGEST.parquet` (row groups of `COMPACT_ROW_GROUP` rows), then delete them.

        The compacted file names the micro-batches it holds in its own metadata (`COVERS`) and is written
        atomically before any of them is deleted, so at every instant each event is in a file: readers that
        list through `visible` (replicas) never apply both; a batch run listing in the moment between the write
        and the deletes would see both and keep one (`duplicate_event_id`). Idempotent: run again after a
        crash, it deletes the micro-batches a compacted file already holds and compacts only the rest; the
        file name's digest of the names it holds makes a rerun rewrite the same file, never a second one."""
        now = now or dt.datetime.now(dt.timezone.utc)
        done = {"hours": 0, "micro_batches": 0, "rows": 0, "finished": 0}
        for day in _days_from(self.online, self.storage, dt.date.min):
            for hour in subfolders(f"{self.online.events}/{day}", self.storage):
                if not (len(hour) == 2 and hour.isdigit()):
                    continue
                start = dt.datetime.combine(dt.date.fromisoformat(day), dt.time(int(hour)), dt.timezone.utc)
                if start + dt.timedelta(hours=1) + COMPACT_AFTER > now:
                    continue
                folder = f"{self.online.events}/{day}/{hour}"
                files = list_files(folder, self.storage, suffixes=(".parquet",))
                visible = set(self.visible(files))
                for path in files:  # held by a compacted file: a compaction that stopped before its deletes
                    if path not in visible:
                        delete(path, self.storage)
                        done["finished"] += 1
                pending = sorted(p for p in visible if not _is_compacted(p))
                if len(pending) < 2:
                    continue
                names = [path[len(folder) + 1 :] for path in pending]
                table = pa.concat_tables([self.read(path).cast(CONTRACT_SCHEMA) for path in pending])
                digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]
                last_ms = max(int(committed_at(path) * 1000) for path in pending)
                target = f"{folder}/{last_ms:013d}-{COMPACTED}-{digest}.parquet"
                sink = io.BytesIO()
                pq.write_table(
                    table.replace_schema_metadata({COVERS: json.dumps(names)}),
                    sink,
                    compression="zstd",
                    row_group_size=COMPACT_ROW_GROUP,
                )
                write_bytes(target, sink.getvalue(), self.storage)
                for path in pending:
                    delete(path, self.storage)
                done["hours"] += 1
                done["micro_batches"] += len(pending)
                done["rows"] += table.num_rows
        if done["hours"] or done["finished"]:
            log.info(
                "live events: %d micro-batches (%d rows) of %d closed hours compacted; %d left by an earlier "
                "compaction removed",
                done["micro_batches"],
                done["rows"],
                done["hours"],
                done["finished"],
            )
        return done

    def recent(self, now: dt.datetime | None = None) -> list[str]:
        """Micro-batches of this minute and the last (what tailing replicas list)."""
        now = now or dt.datetime.now(dt.timezone.utc)
        files = []
        for when in (now - dt.timedelta(minutes=1), now):
            files.extend(list_files(self.folder(when), self.storage, suffixes=(".parquet",)))
        return files

    def since(self, day: dt.date) -> list[str]:
        """Every micro-batch or compacted file from day folders on or after `day` (a replay)."""
        files = []
        for folder_day in _days_from(self.online, self.storage, day):
            files.extend(list_files(f"{self.online.events}/{folder_day}", self.storage, suffixes=(".parquet",)))
        return self.visible(files)

    def read(self, path: str) -> pa.Table:
        return read_parquet_file(path, self.storage)


def _is_compacted(path: str) -> bool:
    return f"-{COMPACTED}-" in path.rsplit("/", 1)[-1]


def _days_from(online: OnlineLayout, storage: StorageConfig, day: dt.date) -> list[str]:
    return [name for name in subfolders(online.events, storage) if len(name) == 10 and name >= day.isoformat()]


def committed_at(path: str) -> float:
    """Seconds since the epoch at which a micro-batch was written (its name's prefix)."""
    return int(path.rsplit("/", 1)[-1].split("-", 1)[0]) / 1000.0


# ------------------------------------------------------------------------------------ live state


@dataclass
class PersonaLive:
    persona_id: str
    ref: Any
    events: LiveEvents = field(default_factory=LiveEvents.empty)
    intents: dict[str, dict[str, float]] = field(default_factory=lambda: {k: {} for k in INTENT_KINDS})
    # (score, percentile, member) per release segment and the time they were computed at, after rescoring
    scored: tuple[np.ndarray, np.ndarray, np.ndarray, float] | None = None


@dataclass(frozen=True)
class SegmentRuntime:
    segment: SegmentConfig
    booster: Any
    feature_names: tuple[str, ...]
    categories: tuple[str, ...] | None
    curve: tuple[np.ndarray, np.ndarray] | None


def load_segments(meta: dict[str, Any], online: OnlineLayout, storage: StorageConfig) -> list[SegmentRuntime]:
    """The release's models, loaded through the score stage's one booster load path."""
    out = []
    for entry in meta["segments"]:
        raw = read_bytes(online.release_model(meta["release_id"], entry["name"]), storage)
        if model_version(raw) != entry["model_version"]:
            raise RuntimeError(f"release {meta['release_id']}: model of {entry['name']} is not the version published")
        curve = entry.get("curve")
        out.append(
            SegmentRuntime(
                segment=SegmentConfig.model_validate(entry["definition"]),
                booster=load_booster(raw, nthread=1),
                feature_names=tuple(entry["feature_names"]),
                categories=tuple(entry["categories"]) if entry.get("categories") is not None else None,
                curve=(np.asarray(curve["score"]), np.asarray(curve["percentile"])) if curve else None,
            )
        )
    return out


class LiveState:
    """One release plus what live events changed since its cut-off, as this replica has applied them."""

    def __init__(self, release, online: OnlineLayout, config: JobConfig) -> None:
        self.release = release
        self.meta = release.meta
        self.config = config
        self.segments = load_segments(self.meta, online, config.storage)
        self.feature_names = list(self.meta["feature_names"])
        position = {name: i for i, name in enumerate(self.feature_names)}
        # per model: the positions of its features in the release's vectors (None: the same order)
        self.columns = [
            None
            if list(s.feature_names) == self.feature_names
            else np.array([position[name] for name in s.feature_names])
            for s in self.segments
        ]
        self.categories = self.meta.get("categories")
        # the run's category slots decide the catalogue's cat-slot features; the release names those it moves
        features = (
            config.features.model_copy(update={"categories": self.categories}) if self.categories else config.features
        )
        published = set(self.meta.get("online_features") or [])
        self.online = [f for f in online_features(features, self.feature_names) if f.name in published]
        self.as_of_s = dt.datetime.combine(
            dt.date.fromisoformat(self.meta["as_of"]), dt.time(), dt.timezone.utc
        ).timestamp()
        self.half_life = float(self.meta["intents"]["half_life_days"])
        self.scoring = ScoringConfig(**self.meta["membership"])
        self.blocklists = blocklists(config.identity)
        self.personas: dict[str, PersonaLive] = {}
        self.keys: dict[int, tuple[str, Any]] = {}
        self.links: dict[int, tuple[str, Any]] = {}
        self.seen: set[int] = set()
        self.files: set[str] = set()
        self.applied = 0

    # --- lookups --------------------------------------------------------------------------------
    async def lookup(self, partner_id: str, key_type: str, key: str) -> tuple[str, Any] | None:
        h = key_hash(partner_id, key_type, key)
        found = await self.release.lookup_key(h)
        return found if found is not None else self.keys.get(h)

    # --- applying micro-batches ---------------------------------------------------------------------
    # Applying runs on one thread per replica (the app's applier), never on the request loop: requests only
    # read the dicts below and swap-in tuples, so a lookup never waits for a rescoring.
    def apply_file(self, path: str, table: pa.Table | None = None) -> int:
        if path in self.files:
            return 0
        if table is None:
            try:
                table = read_parquet_file(path, self.config.storage)
            except FileNotFoundError:  # compacted since it was listed: the compacted file holds its events
                return 0
        self.files.add(path)
        return self.apply(table, committed_at(path))

    def apply(self, table: pa.Table, committed_s: float) -> int:
        """Apply one micro-batch (see the module docstring); returns the personas it changed."""
        if table.num_rows == 0:
            return 0
        partners = table.column("partner_id").to_pylist()
        event_ids = table.column("event_id").to_pylist()
        fresh = []
        for i, (p, e) in enumerate(zip(partners, event_ids)):
            k = event_key(p, e)
            if k not in self.seen:
                self.seen.add(k)
                fresh.append(i)
        if not fresh:
            return 0
        table = table.take(pa.array(fresh, pa.int64()))
        table = table.take(pc.sort_indices(table, [("ts", "ascending"), ("event_id", "ascending")]))
        slim = slim_events(table, *self.blocklists)
        identifiers = [_identifiers(row) for row in slim.to_pylist()]
        flat = sorted({h for ids in identifiers for (h, _, _) in ids})
        junk = set(np.asarray(flat, np.uint64)[self.release.junk_of(flat)].tolist()) if flat else set()
        known = dict(zip(flat, self.release.links_blocking(flat))) if flat else {}
        ts = (table.column("ts").cast(pa.int64()).to_numpy() / 1e6).tolist()
        rows = table.select(
            ["partner_id", "event_type", "category", "brand", "order_id", "event_id", "quantity", "price"]
        ).to_pylist()
        touched: dict[str, PersonaLive] = {}
        for row, ids, t in zip(rows, identifiers, ts):
            usable = [(h, kt, kv) for (h, kt, kv) in ids if h not in junk]
            found = {}
            for h, _, _ in usable:
                hit = self.links.get(h) or known.get(h)
                if hit is not None:
                    found[hit[0]] = hit
            if len(found) != 1:
                continue
            persona_id, ref = next(iter(found.values()))
            for h, key_type, key in usable:
                self.links.setdefault(h, (persona_id, ref))
                self.keys.setdefault(key_hash(row["partner_id"], key_type, key), (persona_id, ref))
            t = min(t, committed_s)  # a partner's clock ahead of ours never moves a window into the future
            if t < self.as_of_s:
                continue  # the batch run's features already cover (or will cover) events before its cut-off
            live = self.personas.get(persona_id)
            if live is None:
                live = self.personas[persona_id] = PersonaLive(persona_id, ref)
            order = f"{row['partner_id']}\x1f{row['order_id'] or row['event_id']}"
            live.events.add(t, row["event_type"], row["category"], order, row["quantity"], row["price"])
            weight = INTENT_WEIGHTS.get(row["event_type"])
            if weight:
                scale = float(intent_scale(np.array([t]), self.as_of_s, self.half_life)[0])
                for kind in INTENT_KINDS:
                    name = (row[INTENT_SOURCE[kind]] or "").strip()
                    if name:
                        live.intents[kind][name] = live.intents[kind].get(name, 0.0) + weight * scale
            touched[persona_id] = live
            self.applied += 1
        if touched:
            self._rescore(list(touched.values()))
        return len(touched)

    def _rescore(self, personas: Sequence[PersonaLive]) -> None:
        bases = self.release.bases_blocking([p.ref for p in personas])
        rows, times = [], []
        for live, base in zip(personas, bases):
            row, t = updated_features(
                base.inputs, self.feature_names, self.online, live.events, self.as_of_s, self.categories
            )
            rows.append(row)
            times.append(t)
        # the release's vectors are already the float32 matrix XGBoost reads (features.matrix's convention:
        # NaN = missing), so each model takes its columns by position; the Arrow table is only for eligibility
        matrix = np.vstack(rows).astype(np.float32)
        table = pa.Table.from_arrays(
            [pa.array(matrix[:, j], pa.float64()) for j in range(matrix.shape[1])], names=self.feature_names
        )
        n = len(personas)
        score = np.full((n, len(self.segments)), np.nan)
        pct = np.full((n, len(self.segments)), np.nan)
        member = np.zeros((n, len(self.segments)), bool)
        for j, seg in enumerate(self.segments):
            eligible = np.asarray(eligible_mask(seg.segment, table, seg.categories), bool)
            if not eligible.any():
                continue
            inputs = matrix[np.ix_(eligible, self.columns[j])] if self.columns[j] is not None else matrix[eligible]
            predicted = np.asarray(seg.booster.inplace_predict(inputs), np.float64)
            score[eligible, j] = predicted
            if seg.curve is not None:
                pct[eligible, j] = np.interp(predicted, seg.curve[0], seg.curve[1])
            member[eligible, j] = membership(predicted, pct[eligible, j], self.scoring)
        for i, (live, t) in enumerate(zip(personas, times)):
            live.scored = (score[i], pct[i], member[i], t)  # one assignment: readers see old or new


def _identifiers(slim_row: dict) -> list[tuple[int, str, str]]:
    """(link hash, lookup key type, lookup key) of each identifier of one slim event row that may link."""
    partner = slim_row["partner_id"]
    out = []
    if slim_row["device_id"]:
        out.append((link_hash("device", None, slim_row["device_id"]), "device_id", slim_row["device_id"]))
    if slim_row["email_n"] and slim_row["email_flag"] is None:
        out.append((link_hash("email", None, slim_row["email_n"]), "email_sha256", contact_key(slim_row["email_n"])))
    if slim_row["phone_n"] and slim_row["phone_flag"] is None:
        out.append((link_hash("phone", None, slim_row["phone_n"]), "phone_sha256", contact_key(slim_row["phone_n"])))
    for kind, column in (("customer", "customer_id"), ("subscriber", "subscriber_id")):
        if slim_row[column]:
            out.append((link_hash(kind, partner, slim_row[column]), column, slim_row[column]))
    return out


def event_time_iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
