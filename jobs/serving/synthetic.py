"""A synthetic finished run in the batch's published format, with real XGBoost models: the one builder of the
serving tests' fixture (a hundred personas) and of `scripts/bench_serve.py` (a million). Never on the
production path.

Tables are written through `jobs.storage.writing` (parts + `_SUCCESS` marker, as the stages publish them;
features/ partitioned by `as_of=`), `CHUNK` personas at a time, so the driver holds one chunk. Models are real
boosters trained on the first chunk's features (their score rises with recent product views and carts, so a
live event visibly moves it), published as the models bundle the train stage writes (`jobs.model.bundle`:
SEGMENT/model.json + model_card.json, marker `segments`); scores/ is what those models give, with
percentiles over all personas and top-10% membership.

Known personas (the tests reason about them):
  persona 0 ("A"): device dev-0 [p1, p2], email a0@shop.test [p1], phone +359888100000 [p2],
                   customer c-0 at p1, subscriber s-0 at p2
  persona i > 0:   device dev-i and customer c-i at partner p{1 + i % 3} (persona 3: p1, persona 2: p3),
                   email user{i}@shop.test when i % 4 == 0
  every persona:   4 events before the cut-off (2 product views, a cart, a purchase), categories and brands
                   cycling with i
  dev-shared: a device the run audited as shared (junk): it never links anyone online
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow as pa

from features.catalog import catalog, feature_schema
from features.matrix import feature_matrix
from jobs.config import FeaturesConfig, JobConfig, SegmentConfig, StorageConfig
from jobs.identity.junk import AUDIT_SCHEMA
from jobs.identity.personas import IDENTITY_MAP_SCHEMA
from jobs.model import bundle
from jobs.model.booster import model_version
from jobs.run.layout import RunLayout
from jobs.segments import eligible_mask
from jobs.storage import writing

AS_OF = dt.date(2026, 11, 29)
RUN_ID = "2026-11-29"
CATEGORIES = ["beauty", "books", "electronics", "fashion", "garden", "home", "kids", "pets", "sports", "toys"]
BRANDS = ["Acme", "Globex", "Initech", "Umbrella"]
PARTNERS = ["p1", "p2", "p3"]
TS = pa.timestamp("us", tz="UTC")
SEGMENTS = [
    SegmentConfig(name="ecommerce_buyers", kind="ecommerce_buyers"),
    SegmentConfig(name="category_lovers_fashion", kind="category_lovers", category="fashion"),
    SegmentConfig(name="p3_only_buyers", kind="ecommerce_buyers", partner_id="p3"),
]
EMAIL_A = "a0@shop.test"
PHONE_A = "+359888100000"
CHUNK = 125_000
TRAIN_ROWS = 20_000
EVENT_TYPES = ("product_view", "product_view", "add_to_cart", "purchase")  # a persona's k-th event


def persona_id(i: int) -> str:
    return f"{0x5EED0000 + i:016x}"


def persona_ids(lo: int, hi: int) -> pa.Array:
    return pa.array([persona_id(i) for i in range(lo, hi)], pa.string())


def job_config(root: str, **serving) -> JobConfig:
    return JobConfig(root=root, segments=SEGMENTS, serving={"num_partitions": 2, **serving})


def _partners(i: np.ndarray) -> np.ndarray:
    return np.array(PARTNERS, dtype=object)[i % len(PARTNERS)]


def feature_chunk(lo: int, hi: int, rng: np.random.Generator) -> pa.Table:
    schema = feature_schema(FeaturesConfig())
    n = hi - lo
    activity = rng.gamma(1.5, 2.0, n)
    columns = {"persona_id": persona_ids(lo, hi), "as_of": pa.array(np.full(n, np.datetime64(AS_OF)), pa.date32())}
    for feature in catalog(FeaturesConfig()):
        if feature.dtype == "int64":
            scale = 1.0 if feature.window is None else min(feature.window, 90) / 30
            values = rng.poisson(activity * scale * 0.7)
        elif feature.name.startswith("days_since"):
            values = rng.exponential(20.0, n)
        else:
            values = rng.random(n)
        columns[feature.name] = pa.array(values, schema.field(feature.name).type)
    return pa.table(columns, schema=schema)


def identity_chunk(lo: int, hi: int) -> pa.Table:
    first = dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc)

    def rows(kind: str, values, personas, seen, partner=None) -> pa.Table:
        n = len(values)
        return pa.table(
            {
                "identifier_type": pa.repeat(pa.scalar(kind), n),
                "identifier": pa.array(values, pa.string()),
                "partner_id": pa.array(partner if partner is not None else [None] * n, pa.string()),
                "persona_id": pa.array(personas, pa.string()),
                "first_seen": pa.repeat(pa.scalar(first, TS), n),
                "last_seen": pa.repeat(pa.scalar(first, TS), n),
                "n_events": pa.repeat(pa.scalar(5), n),
                "seen_at_partners": pa.array(seen, pa.list_(pa.string())),
            },
            schema=IDENTITY_MAP_SCHEMA,
        )

    parts = []
    if lo == 0:
        a = [persona_id(0)]
        parts += [
            rows("device", ["dev-0"], a, [["p1", "p2"]]),
            rows("email", [EMAIL_A], a, [["p1"]]),
            rows("phone", [PHONE_A], a, [["p2"]]),
            rows("customer", ["c-0"], a, [["p1"]], ["p1"]),
            rows("subscriber", ["s-0"], a, [["p2"]], ["p2"]),
            rows("click_token", ["tok-0"], a, [["p1"]], ["p1"]),
        ]
    i = np.arange(max(lo, 1), hi)
    partners = _partners(i)
    personas = [persona_id(k) for k in i]
    seen = [[p] for p in partners]
    mail = np.flatnonzero(i % 4 == 0)
    parts += [
        rows("device", [f"dev-{k}" for k in i], personas, seen),
        rows("customer", [f"c-{k}" for k in i], personas, seen, list(partners)),
        rows("email", [f"user{i[m]}@shop.test" for m in mail], [personas[m] for m in mail], [seen[m] for m in mail]),
    ]
    return pa.concat_tables(parts)


def events_chunk(lo: int, hi: int, rng: np.random.Generator) -> pa.Table:
    """events_resolved rows for the intents: each persona's 4 events in the 20 days before the cut-off."""
    i = np.repeat(np.arange(lo, hi), len(EVENT_TYPES))
    k = np.tile(np.arange(len(EVENT_TYPES)), hi - lo)
    end = np.datetime64(dt.datetime.combine(AS_OF, dt.time()), "us")
    ts = end - (rng.uniform(0.5, 20, len(i)) * 86_400e6).astype("timedelta64[us]")
    categories = np.array(CATEGORIES, dtype=object)[(i + k) % len(CATEGORIES)]
    return pa.table(
        {
            "event_id": pa.array([f"e-{a}-{b}" for a, b in zip(i, k)]),
            "partner_id": pa.array(_partners(i), pa.string()),
            "persona_id": pa.array([persona_id(a) for a in i], pa.string()),
            "ts": pa.array(ts, TS),
            "event_type": pa.array(np.array(EVENT_TYPES, dtype=object)[k], pa.string()),
            "category": pa.array([f"{c}/sub{b}" for c, b in zip(categories, k)], pa.string()),
            "brand": pa.array(np.array(BRANDS, dtype=object)[(i + k) % len(BRANDS)], pa.string()),
        }
    )


def train_models(sample: pa.Table, names: list[str], seed: int) -> dict[str, bytes]:
    import xgboost as xgb

    x = feature_matrix(sample, names)
    signal = (
        sample.column("product_views_7d").to_numpy()
        + 2 * sample.column("carts_7d").to_numpy()
        - 0.05 * np.nan_to_num(sample.column("days_since_last_view").to_numpy(), nan=90.0)
    )
    models = {}
    for k, segment in enumerate(SEGMENTS):
        rng = np.random.default_rng(seed + k)
        y = (signal + rng.normal(0, 1.0, len(signal)) > np.median(signal)).astype(np.float32)
        booster = xgb.train(
            {"objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "nthread": 2, "seed": seed + k},
            xgb.DMatrix(x, label=y, feature_names=names),
            15,
        )
        models[segment.name] = bytes(booster.save_raw("json"))
    return models


def _write_models(layout: RunLayout, storage: StorageConfig, models: dict[str, bytes], names: list[str]) -> dict:
    versions = {name: model_version(model) for name, model in models.items()}
    entries = {name: {"status": bundle.TRAINED, "model_version": version} for name, version in versions.items()}
    with writing(layout.table("models"), storage, {"segments": entries, "categories": CATEGORIES}) as writer:
        for segment in SEGMENTS:
            card = {
                "segment": segment.name,
                "status": bundle.TRAINED,
                "reason": None,
                "model_version": versions[segment.name],
                "definition": segment.model_dump(mode="json"),
                "feature_names": names,
                "feature_types": None,
                "feature_categories": CATEGORIES,
            }
            writer.write_file(RunLayout.model_file(segment.name, bundle.MODEL), models[segment.name])
            writer.write_file(RunLayout.model_file(segment.name, bundle.CARD), json.dumps(card).encode())
    return versions


def _scores(segment: SegmentConfig, ids: list[pa.Array], scores: list[np.ndarray], version: str) -> pa.Table:
    score = np.concatenate(scores) if scores else np.zeros(0)
    rank = np.empty(len(score))
    rank[score.argsort(kind="stable")] = np.arange(len(score))
    percentile = 100.0 * (rank + 0.5) / max(len(score), 1)
    return pa.table(
        {
            "persona_id": pa.chunked_array(ids, pa.string()),
            "segment": pa.repeat(pa.scalar(segment.name), len(score)),
            "score": score,
            "percentile": percentile,
            "model_version": pa.repeat(pa.scalar(version), len(score)),
            "member": percentile >= 90.0,
        }
    )


def build_run(root: str, storage: StorageConfig, n: int = 120, seed: int = 5) -> str:
    """Write the finished run of `n` personas under ROOT/runs/RUN_ID; returns the run folder."""
    import xgboost as xgb

    rng = np.random.default_rng(seed)
    layout = RunLayout.for_run(root, RUN_ID)
    names = [f.name for f in catalog(FeaturesConfig())]
    boosters: dict[str, xgb.Booster] = {}
    scored: dict[str, tuple[list, list]] = {s.name: ([], []) for s in SEGMENTS}
    models: dict[str, bytes] = {}
    with writing(layout.table("features"), storage, {"categories": CATEGORIES}) as writer:
        for part, lo in enumerate(range(0, n, CHUNK)):
            chunk = feature_chunk(lo, min(n, lo + CHUNK), rng)
            if not models:  # trained on the first chunk, so a chunk's scores need no second pass
                models = train_models(chunk.slice(0, TRAIN_ROWS), names, seed)
                for name, model in models.items():
                    boosters[name] = xgb.Booster(model_file=bytearray(model))
            writer.write_arrow(chunk, partition={"as_of": AS_OF}, name=f"part-{part:05d}")
            for segment in SEGMENTS:
                rows = chunk.filter(pa.array(eligible_mask(segment, chunk, CATEGORIES)))
                score = boosters[segment.name].inplace_predict(feature_matrix(rows, names, order="F"))
                scored[segment.name][0].append(rows.column("persona_id").combine_chunks())
                scored[segment.name][1].append(np.asarray(score, np.float64))
    with writing(layout.table("identity_map"), storage) as writer:
        for part, lo in enumerate(range(0, n, CHUNK)):
            writer.write_arrow(identity_chunk(lo, min(n, lo + CHUNK)), name=f"part-{part:05d}")
    shared = {
        "identifier_type": "device",
        "identifier": "dev-shared",
        "partner_id": None,
        "rule": "shared_device",
        "figure": 9.0,
        "threshold": 3.0,
        "n_events": 40,
    }
    with writing(layout.table("identity_audit"), storage) as writer:
        writer.write_arrow(pa.Table.from_pylist([shared], schema=AUDIT_SCHEMA))
    with writing(layout.table("events_resolved"), storage) as writer:
        for part, lo in enumerate(range(0, n, CHUNK)):
            writer.write_arrow(events_chunk(lo, min(n, lo + CHUNK), rng), name=f"part-{part:05d}")
    versions = _write_models(layout, storage, models, names)
    with writing(layout.table("scores"), storage, {"as_of": AS_OF.isoformat(), "segments": versions}) as writer:
        for part, segment in enumerate(SEGMENTS):
            ids, scores = scored[segment.name]
            writer.write_arrow(_scores(segment, ids, scores, versions[segment.name]), name=f"part-{part:05d}")
    return layout.run_dir
