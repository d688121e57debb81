"""A small finished run in the batch's published format, with real XGBoost models, for the serving tests.

Tables are written through `jobs.storage.writing` (parts + `_SUCCESS` marker, as the stages publish them;
features/ partitioned by `as_of=`); models are real boosters trained on the fixture's features (their score
rises with recent product views and carts, so a live event visibly moves it), published as the models
bundle the train stage writes (`jobs.model.bundle`: SEGMENT/model.json + model_card.json, marker
`segments`), and scores/ is what those models give, with percentiles and top-10% membership.

Known personas (the tests reason about them):
  persona 0 ("A"): device dev-0 [p1, p2], email a0@shop.test [p1], phone +359888100000 [p2],
                   customer c-0 at p1, subscriber s-0 at p2
  persona i > 0:   device dev-i and customer c-i at partner p{1 + i % 3} (persona 3: p1, persona 2: p3)
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
PARTNERS = ["p1", "p2", "p3"]
TS = pa.timestamp("us", tz="UTC")
SEGMENTS = [
    SegmentConfig(name="ecommerce_buyers", kind="ecommerce_buyers"),
    SegmentConfig(name="category_lovers_fashion", kind="category_lovers", category="fashion"),
    SegmentConfig(name="p3_only_buyers", kind="ecommerce_buyers", partner_id="p3"),
]
EMAIL_A = "a0@shop.test"
PHONE_A = "+359888100000"


def persona_id(i: int) -> str:
    return f"{0x5EED0000 + i:016x}"


def job_config(root: str, **serving) -> JobConfig:
    return JobConfig(root=root, segments=SEGMENTS, serving={"num_partitions": 2, **serving})


def _features(n: int, rng: np.random.Generator) -> pa.Table:
    schema = feature_schema(FeaturesConfig())
    columns = {"persona_id": pa.array([persona_id(i) for i in range(n)]), "as_of": pa.array([AS_OF] * n, pa.date32())}
    activity = rng.gamma(1.5, 2.0, n)
    for feature in catalog(FeaturesConfig()):
        if feature.dtype == "int64":
            scale = 1.0 if feature.window is None else min(feature.window, 90) / 30
            values = rng.poisson(activity * scale * 0.7).astype(np.int64)
        elif feature.name.startswith("days_since"):
            values = rng.exponential(20.0, n)
        else:
            values = rng.random(n)
        columns[feature.name] = pa.array(values, schema.field(feature.name).type)
    return pa.table(columns, schema=schema)


def _train(features: pa.Table, names: list[str], segment: SegmentConfig, seed: int) -> bytes:
    import xgboost as xgb

    x = feature_matrix(features, names)
    rng = np.random.default_rng(seed)
    signal = (
        features.column("product_views_7d").to_numpy()
        + 2 * features.column("carts_7d").to_numpy()
        - 0.05 * np.nan_to_num(features.column("days_since_last_view").to_numpy(), nan=90.0)
    )
    y = (signal + rng.normal(0, 1.0, len(signal)) > np.median(signal)).astype(np.float32)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "nthread": 1, "seed": seed},
        xgb.DMatrix(x, label=y, feature_names=names),
        15,
    )
    return bytes(booster.save_raw("json"))


def _identity(n: int) -> pa.Table:
    first = dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc)
    rows = []

    def add(kind, value, persona, seen, partner=None):
        rows.append(
            {
                "identifier_type": kind,
                "identifier": value,
                "partner_id": partner,
                "persona_id": persona,
                "first_seen": first,
                "last_seen": first,
                "n_events": 5,
                "seen_at_partners": seen,
            }
        )

    add("device", "dev-0", persona_id(0), ["p1", "p2"])
    add("email", EMAIL_A, persona_id(0), ["p1"])
    add("phone", PHONE_A, persona_id(0), ["p2"])
    add("customer", "c-0", persona_id(0), ["p1"], "p1")
    add("subscriber", "s-0", persona_id(0), ["p2"], "p2")
    add("click_token", "tok-0", persona_id(0), ["p1"], "p1")
    for i in range(1, n):
        partner = PARTNERS[i % len(PARTNERS)]
        add("device", f"dev-{i}", persona_id(i), [partner])
        add("customer", f"c-{i}", persona_id(i), [partner], partner)
        if i % 4 == 0:
            add("email", f"user{i}@shop.test", persona_id(i), [partner])
    return pa.Table.from_pylist(rows, schema=IDENTITY_MAP_SCHEMA)


def _events(n: int, rng: np.random.Generator) -> pa.Table:
    """events_resolved rows for the intents: product views, carts and purchases before the cut-off."""
    end = dt.datetime.combine(AS_OF, dt.time(), dt.timezone.utc)
    rows = []
    brands = ["Acme", "Globex", "Initech", "Umbrella"]
    for i in range(n):
        for k in range(4):
            category = CATEGORIES[(i + k) % len(CATEGORIES)]
            rows.append(
                {
                    "event_id": f"e-{i}-{k}",
                    "partner_id": PARTNERS[i % 3],
                    "persona_id": persona_id(i),
                    "ts": end - dt.timedelta(days=float(rng.uniform(0.5, 20))),
                    "event_type": ["product_view", "product_view", "add_to_cart", "purchase"][k],
                    "category": f"{category}/sub{k}",
                    "brand": brands[(i + k) % len(brands)],
                }
            )
    return pa.Table.from_pylist(
        rows,
        schema=pa.schema(
            [
                ("event_id", pa.string()),
                ("partner_id", pa.string()),
                ("persona_id", pa.string()),
                ("ts", TS),
                ("event_type", pa.string()),
                ("category", pa.string()),
                ("brand", pa.string()),
            ]
        ),
    )


def build_run(root: str, storage: StorageConfig, n: int = 120, seed: int = 5) -> str:
    """Write the finished run under ROOT/runs/RUN_ID; returns the run folder."""
    rng = np.random.default_rng(seed)
    layout = RunLayout.for_run(root, RUN_ID)
    features = _features(n, rng)
    names = [f.name for f in catalog(FeaturesConfig())]
    with writing(layout.table("features"), storage, {"categories": CATEGORIES}) as writer:
        writer.write_arrow(features, partition={"as_of": AS_OF})
    with writing(layout.table("identity_map"), storage) as writer:
        writer.write_arrow(_identity(n))
    audit = pa.Table.from_pylist(
        [
            {
                "identifier_type": "device",
                "identifier": "dev-shared",
                "partner_id": None,
                "rule": "shared_device",
                "figure": 9.0,
                "threshold": 3.0,
                "n_events": 40,
            }
        ],
        schema=AUDIT_SCHEMA,
    )
    with writing(layout.table("identity_audit"), storage) as writer:
        writer.write_arrow(audit)
    with writing(layout.table("events_resolved"), storage) as writer:
        writer.write_arrow(_events(n, rng))
    models = {segment.name: _train(features, names, segment, seed + k) for k, segment in enumerate(SEGMENTS)}
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
    score_parts = [_scores(features, names, s, models[s.name], versions[s.name]) for s in SEGMENTS]
    with writing(layout.table("scores"), storage, {"as_of": AS_OF.isoformat(), "segments": versions}) as writer:
        writer.write_arrow(pa.concat_tables(score_parts))
    return layout.run_dir


def _scores(features: pa.Table, names: list[str], segment: SegmentConfig, model: bytes, version: str) -> pa.Table:
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(bytearray(model))
    eligible = eligible_mask(segment, features, CATEGORIES)
    rows = features.filter(pa.array(eligible))
    score = booster.inplace_predict(feature_matrix(rows, names, order="F")).astype(np.float64)
    order = score.argsort(kind="stable")
    rank = np.empty(len(score))
    rank[order] = np.arange(len(score))
    percentile = 100.0 * (rank + 0.5) / max(len(score), 1)
    n = len(score)
    return pa.table(
        {
            "persona_id": rows.column("persona_id"),
            "segment": pa.repeat(pa.scalar(segment.name), n),
            "score": score,
            "percentile": percentile,
            "model_version": pa.repeat(pa.scalar(version), n),
            "member": percentile >= 90.0,
        }
    )
