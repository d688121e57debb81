"""`segments publish --run RUN_DIR`: a finished run becomes a release, then the current one, atomically.

    features/ ─┐  Ray tasks, one per file, hash-split on persona_id (`jobs.raykit.shuffle.map_exchange`)
    scores/   ─┤      feature rows (one float32 vector each), score rows, intent partials (events_resolved,
    events_resolved/ ─┤      last `intent_days`), lookup keys and link ids (identity_map)
    identity_map/ ─┘
        └─▶ one task per persona partition joins them and writes its own Parquet parts:
            profiles/part-P (persona, scores, percentiles, membership, reasons, kept intents, feature vector)
            keys/part-P     (partner-scoped lookup key hash -> row of profiles/part-P)
            links/part-P    (link id hash -> row), and junk/ (link ids of the run's audited identifiers)
    ROOT/online/releases/RELEASE_ID/{profiles,keys,links,junk}/ + models/SEG/model.json + release.json (last)
    [--store redis] a Ray task per part writes every key of the release under its own Redis namespace in
                    pipelined batches, then the release's meta key (last)
    ROOT/online/current.json  <- one atomic write: replicas switch when they see it

Nothing event-sized passes through the driver: it holds object references, per-partition counts and the
per-segment score -> percentile curves (at most 1001 points each). Releases older than the previous one
are removed after the switch (replicas still loading the previous one keep it).
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import secrets
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.matrix import feature_matrix
from jobs.config import JobConfig, StorageConfig
from jobs.errors import InfraError, UserError
from jobs.raykit.session import ray_session
from jobs.raykit.shuffle import map_exchange
from jobs.run.layout import OnlineLayout
from jobs.serving.identifiers import link_ids, lookup_keys
from jobs.serving.live import EventLog
from jobs.serving.online import INTENT_KINDS, intent_partials, online_features
from jobs.serving.source import RunSource, SegmentModel, read_parquet_file
from jobs.storage import TableWriter, delete, new_write_id, read_json_or_none, subfolders, write_bytes, write_json

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CURVE_BINS = 1000  # score -> percentile curve: the lowest and highest score per 0.1 percentile
INTENT_TYPE = pa.list_(pa.struct([("name", pa.string()), ("weight", pa.float64())]))
PART_ROWS = pa.schema([("key_hash", pa.uint64()), ("row", pa.int32())])


def score_column(segment: str, what: str) -> str:
    """`score__SEG`, `percentile__SEG`, `member__SEG`, `reasons__SEG` of the profiles table."""
    return f"{what}__{segment}"


def part_name(part: int) -> str:
    return f"part-{part:05d}.parquet"


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


# ------------------------------------------------------------------------------- map side (one file)


def _feature_rows(path: str, names: Sequence[str], storage: StorageConfig) -> pa.Table:
    table = read_parquet_file(path, storage, ["persona_id", *names])
    matrix = np.ascontiguousarray(feature_matrix(table, names, order="C"))
    width = 4 * len(names)
    vectors = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), table.num_rows, [None, pa.py_buffer(matrix.tobytes())]
    )
    return pa.table({"persona_id": table.column("persona_id").combine_chunks(), "inputs": vectors})


def _score_rows(path: str, segments: Sequence[str], storage: StorageConfig) -> pa.Table:
    table = read_parquet_file(path, storage, ["persona_id", "segment", "score", "percentile", "member", "reasons"])
    return table.filter(pc.is_in(table.column("segment"), pa.array(list(segments), pa.string())))


def _intent_rows(path: str, as_of: dt.date, days: int, half_life: float, storage: StorageConfig) -> pa.Table:
    events = read_parquet_file(path, storage, ["persona_id", "ts", "event_type", "category", "brand"])
    return intent_partials(events, as_of, days, half_life)


def _identity_rows(path: str, storage: StorageConfig) -> tuple[pa.Table, pa.Table]:
    identity = read_parquet_file(path, storage)
    return lookup_keys(identity), link_ids(identity)


# ----------------------------------------------------------------------------- reduce side (partition)


def _top_intents(partials: pa.Table | None, personas: pd.Index, kind: str, kept: int) -> pa.Array:
    """list<struct<name, weight>> per persona (largest `kept` weights), aligned with `personas`."""
    n = len(personas)
    if partials is None or partials.num_rows == 0:
        return pa.array([[] for _ in range(n)], INTENT_TYPE)
    df = partials.filter(pc.equal(partials.column("kind"), kind)).to_pandas()
    df = df.groupby(["persona_id", "name"], sort=False, as_index=False)["weight"].sum()
    df["row"] = personas.get_indexer(df["persona_id"])
    df = df[df["row"] >= 0].sort_values(["row", "weight", "name"], ascending=[True, False, True])
    df = df[df.groupby("row").cumcount() < kept]
    counts = np.bincount(df["row"].to_numpy(), minlength=n)
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    values = pa.StructArray.from_arrays(
        [pa.array(df["name"].to_numpy(), pa.string()), pa.array(df["weight"].to_numpy(), pa.float64())],
        names=["name", "weight"],
    )
    return pa.ListArray.from_arrays(offsets, values).cast(INTENT_TYPE)


def _curve_partial(scores: pa.Table, segment: str) -> pa.Table:
    rows = scores.filter(pc.equal(scores.column("segment"), segment))
    score = rows.column("score").to_numpy(zero_copy_only=False).astype(np.float64)
    pct = rows.column("percentile").to_numpy(zero_copy_only=False).astype(np.float64)
    ok = ~(np.isnan(score) | np.isnan(pct))
    if not ok.any():
        return pa.table(
            {
                "segment": pa.array([], pa.string()),
                "bin": pa.array([], pa.int64()),
                "lo": pa.array([], pa.float64()),
                "hi": pa.array([], pa.float64()),
                "plo": pa.array([], pa.float64()),
                "phi": pa.array([], pa.float64()),
            }
        )
    df = pd.DataFrame(
        {
            "bin": np.clip((pct[ok] / 100 * CURVE_BINS).astype(np.int64), 0, CURVE_BINS),
            "score": score[ok],
            "pct": pct[ok],
        }
    )
    agg = df.groupby("bin").agg(lo=("score", "min"), hi=("score", "max"), plo=("pct", "min"), phi=("pct", "max"))
    return pa.table(
        {
            "segment": pa.repeat(pa.scalar(segment), len(agg)),
            "bin": pa.array(agg.index.to_numpy()),
            "lo": agg["lo"].to_numpy(),
            "hi": agg["hi"].to_numpy(),
            "plo": agg["plo"].to_numpy(),
            "phi": agg["phi"].to_numpy(),
        }
    )


def _rows_of(table: pa.Table | None, hash_column: str, personas: pd.Index) -> pa.Table:
    if table is None or table.num_rows == 0:
        return PART_ROWS.empty_table()
    row = personas.get_indexer(table.column("persona_id").to_pandas())
    keep = row >= 0
    return pa.table(
        {"key_hash": table.column(hash_column).to_numpy()[keep], "row": row[keep].astype(np.int32)}, schema=PART_ROWS
    )


def build_partition(
    part: int,
    features: pa.Table,
    scores: pa.Table | None,
    intents: pa.Table | None,
    keys: pa.Table | None,
    links: pa.Table | None,
    segments: Sequence[str],
    intents_kept: int,
) -> tuple[pa.Table, pa.Table, pa.Table, pa.Table]:
    """One persona partition -> (profiles, keys, links, curve partials): pure, so it is tested directly."""
    features = features.sort_by("persona_id")
    personas = pd.Index(features.column("persona_id").to_pandas())
    if not personas.is_unique:
        raise UserError(f"features/ holds a persona more than once (partition {part}): recompute the features.")
    columns: dict[str, pa.Array] = {"persona_id": features.column("persona_id"), "inputs": features.column("inputs")}
    curves = []
    with_reasons = scores is not None and "reasons" in scores.column_names
    for segment in segments:
        score = np.full(len(personas), np.nan, np.float32)
        pct = np.full(len(personas), np.nan, np.float32)
        member = np.zeros(len(personas), bool)
        reasons = None
        if scores is not None and scores.num_rows:
            rows = scores.filter(pc.equal(scores.column("segment"), segment))
            at = personas.get_indexer(rows.column("persona_id").to_pandas())
            hit = at >= 0
            score[at[hit]] = rows.column("score").to_numpy(zero_copy_only=False)[hit]
            pct[at[hit]] = rows.column("percentile").to_numpy(zero_copy_only=False)[hit]
            member[at[hit]] = pc.fill_null(rows.column("member"), False).to_numpy(zero_copy_only=False)[hit]
            if with_reasons:
                listed = [None] * len(personas)
                for i, value in zip(at[hit], rows.column("reasons").filter(pa.array(hit)).to_pylist()):
                    listed[i] = value
                reasons = pa.array(listed, pa.list_(pa.string()))
            curves.append(_curve_partial(scores, segment))
        columns[score_column(segment, "score")] = pa.array(score)
        columns[score_column(segment, "percentile")] = pa.array(pct)
        columns[score_column(segment, "member")] = pa.array(member)
        if with_reasons:
            columns[score_column(segment, "reasons")] = (
                reasons if reasons is not None else pa.nulls(len(personas), pa.list_(pa.string()))
            )
    for kind in INTENT_KINDS:
        columns[f"intent_{kind}"] = _top_intents(intents, personas, kind, intents_kept)
    profiles = pa.table(columns)
    curve = (
        pa.concat_tables(curves)
        if curves
        else _curve_partial(
            pa.table(
                {
                    "segment": pa.array([], pa.string()),
                    "score": pa.array([], pa.float64()),
                    "percentile": pa.array([], pa.float64()),
                }
            ),
            "",
        )
    )
    return profiles, _rows_of(keys, "key_hash", personas), _rows_of(links, "link_hash", personas), curve


def _write_partition(
    part: int, refs: list, folders: dict[str, str], segments: Sequence[str], intents_kept: int, storage: StorageConfig
) -> dict[str, Any]:
    import ray

    features, scores, intents, keys, links = (ray.get(r) if r is not None else None for r in refs)
    profiles, key_rows, link_rows, curve = build_partition(
        part, features, scores, intents, keys, links, segments, intents_kept
    )
    for name, table in (("profiles", profiles), ("keys", key_rows), ("links", link_rows)):
        write_bytes(f"{folders[name]}/{part_name(part)}", _parquet_bytes(table), storage)
    return {
        "part": part,
        "profiles": profiles.num_rows,
        "keys": key_rows.num_rows,
        "links": link_rows.num_rows,
        "curve": curve,
    }


def _write_junk(part: int, path: str, folder: str, storage: StorageConfig) -> int:
    audit = read_parquet_file(path, storage, ["identifier_type", "identifier", "partner_id"])
    junk = link_ids(audit).select(["link_hash"])
    write_bytes(f"{folder}/{part_name(part)}", _parquet_bytes(junk), storage)
    return junk.num_rows


def merge_curves(partials: Sequence[pa.Table]) -> dict[str, dict[str, list[float]]]:
    """segment -> {"score": [...], "percentile": [...]}, increasing: np.interp maps a live score to a percentile."""
    non_empty = [p for p in partials if p.num_rows]
    if not non_empty:
        return {}
    df = pa.concat_tables(non_empty).to_pandas()
    out = {}
    for segment, rows in df.groupby("segment"):
        agg = rows.groupby("bin").agg(lo=("lo", "min"), hi=("hi", "max"), plo=("plo", "min"), phi=("phi", "max"))
        points = np.column_stack([np.r_[agg["lo"], agg["hi"]], np.r_[agg["plo"], agg["phi"]]])
        points = points[np.lexsort((points[:, 1], points[:, 0]))]
        # a percentile never falls as the score rises: keep the running maximum
        out[str(segment)] = {"score": points[:, 0].tolist(), "percentile": np.maximum.accumulate(points[:, 1]).tolist()}
    return out


# ------------------------------------------------------------------------------------------- driver


def ensure_secret(online: OnlineLayout, storage: StorageConfig) -> None:
    """Create the server secret behind partner-scoped persona ids once; it outlives releases."""
    if read_json_or_none(online.secret, storage) is None:
        write_json(
            online.secret,
            {
                "secret": secrets.token_hex(32),
                "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            },
            storage,
        )


def _segment_entry(model: SegmentModel, curves: dict) -> dict[str, Any]:
    segment = model.segment
    return {
        "name": segment.name,
        "kind": segment.kind,
        "partner_id": segment.partner_id,
        "model_version": model.model_version,
        "feature_names": list(model.feature_names),
        "categories": list(model.categories) if model.categories is not None else None,
        "definition": segment.model_dump(mode="json"),
        "curve": curves.get(segment.name),
    }


def build_release(
    source: RunSource,
    online: OnlineLayout,
    release_id: str,
    names: Sequence[str],
    models: Sequence[SegmentModel],
    config: JobConfig,
) -> dict[str, Any]:
    """Write profiles/, keys/, links/ and junk/ of a release with Ray tasks; returns counts and curves."""
    import ray

    storage, serving = config.storage, config.serving
    P = serving.num_partitions
    segments = [m.segment.name for m in models]
    (features,) = map_exchange(
        _feature_rows, [(f, list(names), storage) for f in source.feature_files()], [["persona_id"]], P
    )
    scores = (
        map_exchange(_score_rows, [(f, segments, storage) for f in source.score_files()], [["persona_id"]], P)[0]
        if segments
        else [None] * P
    )
    event_files = source.event_files()
    intents = (
        map_exchange(
            _intent_rows,
            [(f, source.as_of, serving.intent_days, serving.intent_half_life_days, storage) for f in event_files],
            [["persona_id"]],
            P,
        )[0]
        if event_files
        else [None] * P
    )
    keys, links = map_exchange(
        _identity_rows, [(f, storage) for f in source.identity_files()], [["persona_id"], ["persona_id"]], P
    )
    writers = {
        name: TableWriter(online.release_table(release_id, name), storage)
        for name in ("profiles", "keys", "links", "junk")
    }
    folders = {name: writer.folder() for name, writer in writers.items()}
    write = ray.remote(_write_partition)
    done = ray.get(
        [
            write.remote(
                p,
                [features[p], scores[p], intents[p], keys[p], links[p]],
                folders,
                segments,
                serving.intents_kept,
                storage,
            )
            for p in range(P)
        ]
    )
    junk = ray.get(
        [ray.remote(_write_junk).remote(i, f, folders["junk"], storage) for i, f in enumerate(source.audit_files())]
    )
    if not junk:
        empty = pa.table({"link_hash": pa.array([], pa.uint64())})
        write_bytes(f"{folders['junk']}/{part_name(0)}", _parquet_bytes(empty), storage)
    for writer in writers.values():
        writer.publish()
    done.sort(key=lambda d: d["part"])
    return {
        "parts": [{k: d[k] for k in ("part", "profiles", "keys", "links")} for d in done],
        "curves": merge_curves([d["curve"] for d in done]),
        "junk": int(sum(junk)),
    }


def run_publish(config: JobConfig, run_dir: str, store: str | None = None) -> dict[str, Any]:
    """`segments publish --run RUN_DIR [--store embedded|redis]`; returns a summary of the release."""
    started = time.perf_counter()
    storage = config.storage
    store = store or config.serving.store
    if store not in ("embedded", "redis"):
        raise UserError(f"--store {store!r} is not a store: use 'embedded' or 'redis'.")
    source = RunSource(run_dir, storage)
    online = OnlineLayout(source.root)
    models, skipped = source.models(config)
    for item in skipped:
        log.warning("publish: segment %s left out: %s", item["segment"], item["reason"])
    names = source.feature_names()
    online_names = [f.name for f in online_features(config.features, names)]
    release_id = new_write_id()
    ensure_secret(online, storage)
    with ray_session(config.ray):
        built = build_release(source, online, release_id, names, models, config)
        for model in models:
            write_bytes(online.release_model(release_id, model.segment.name), model.model, storage)
        as_of = source.as_of
        meta = {
            "format": FORMAT_VERSION,
            "release_id": release_id,
            "run_id": source.run_id,
            "run_dir": run_dir,
            "as_of": as_of.isoformat(),
            "store": store,
            "published_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "feature_names": list(names),
            "categories": source.categories,
            "online_features": online_names,
            "segments": [_segment_entry(m, built["curves"]) for m in models],
            "skipped": skipped,
            "membership": config.scoring.model_dump(mode="json", include={"membership", "top_percent", "threshold"}),
            "intents": {
                "days": config.serving.intent_days,
                "half_life_days": config.serving.intent_half_life_days,
                "kept": config.serving.intents_kept,
            },
            "parts": built["parts"],
            "personas": sum(p["profiles"] for p in built["parts"]),
            "keys": sum(p["keys"] for p in built["parts"]),
            "links": sum(p["links"] for p in built["parts"]),
            "junk": built["junk"],
            "with_reasons": source.scores_have_reasons(),
        }
        write_json(online.release_meta(release_id), meta, storage)  # the release is complete once this exists
        if store == "redis":
            import redis  # the redis client only where it is used

            from jobs.serving.stores import publish_to_redis

            try:
                meta["redis_keys"] = publish_to_redis(config, online, meta)
            except (OSError, redis.RedisError) as exc:  # redis-py's ConnectionError is not an OSError
                raise InfraError(
                    f"Redis at {config.serving.redis_url} is unreachable ({type(exc).__name__}); "
                    "the release was written but not made current."
                ) from None
    previous = read_json_or_none(online.current, storage)
    write_json(
        online.current,
        {"release_id": release_id, "run_id": source.run_id, "store": store, "published_at": meta["published_at"]},
        storage,
    )
    _prune(online, storage, keep={release_id, (previous or {}).get("release_id")}, config=config)
    compacted = EventLog(online, storage).compact()  # the next run reads fewer, larger event files
    log.info(
        "publish: release %s of run %s: %d personas, %d keys, %d segments",
        release_id,
        source.run_id,
        meta["personas"],
        meta["keys"],
        len(models),
    )
    return {
        "release_id": release_id,
        "run_id": source.run_id,
        "store": store,
        "personas": meta["personas"],
        "keys": meta["keys"],
        "segments": {m.segment.name: m.model_version for m in models},
        "skipped": skipped,
        "online_features": len(online_names),
        "events_compacted": compacted["micro_batches"],
        "current": online.current,
        "seconds": round(time.perf_counter() - started, 2),
    }


def _prune(online: OnlineLayout, storage: StorageConfig, keep: set, config: JobConfig) -> None:
    """Remove releases other than the current and the previous one (replicas may still be loading it)."""
    for release_id in subfolders(online.releases, storage):
        if release_id in keep:
            continue
        meta = read_json_or_none(online.release_meta(release_id), storage) or {}
        if meta.get("store") == "redis":
            from jobs.serving.stores import drop_redis_release

            drop_redis_release(config, release_id)
        delete(online.release(release_id), storage)
