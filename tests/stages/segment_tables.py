"""Small upstream tables for the labels / train / score / report stage tests, published with jobs.storage.

Events carry a planted behaviour: purchases at a persona-specific rate, and 1-6 days before each purchase some
add_to_cart events (the short-term intent that RFM columns do not see). The features table is a stand-in for
the features stage: every catalogue column for the plan's categories, a handful of them computed with pandas
from events before each cut-off (RFM, carts in 7 days, category purchases, one noise column), the rest at the
catalogue's "nothing happened" value, so the train stage reads what the real one publishes.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa

from features.catalog import feature_schema
from jobs.config import JobConfig, PlanView
from jobs.contract.schema import TS_TYPE
from jobs.run.plan import EventFacts, RunPlan, build_plan
from jobs.storage import writing

UTC = dt.timezone.utc
START = dt.datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 120
CATEGORIES = ["fashion", "home"]
NOISE = "sun_share_365d"  # the stand-in's noise column (or, with leak=True, a feature that sees the label window)
INFORMATIVE = [
    "orders_365d",
    "revenue_365d",
    "days_since_last_purchase",
    "carts_7d",
    "cat00_purchases_365d",
    "cat01_purchases_365d",
    NOISE,
]
# Training settings for the small generated runs (a few hundred people; tests/conftest.py's `small_run`, shared
# by the resume and real-upstream stage tests): a segment trains with a few positives, in a few rounds.
QUICK_TRAINING = {
    "min_positives": 5,
    "min_negatives": 5,
    "num_boost_round": 10,
    "early_stopping_rounds": 5,
    "report_every": 5,
}
EVENT_FIELDS = (
    "persona_id",
    "ts",
    "event_type",
    "partner_id",
    "product_id",
    "category",
    "brand",
    "order_id",
    "event_id",
    "price",
)


def make_events(personas: int = 1500, seed: int = 11) -> pa.Table:
    """Purchases at a persona-specific rate; add_to_cart events 1-6 days before each purchase; a fashion
    affinity per persona."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {k: [] for k in EVENT_FIELDS}

    def add(pid, day, kind, category, order=None, price=None):
        rows["persona_id"].append(pid)
        rows["ts"].append(START + dt.timedelta(days=float(day)))
        rows["event_type"].append(kind)
        rows["partner_id"].append(f"p{int(rng.integers(0, 3))}")
        rows["product_id"].append(f"x{int(rng.integers(0, 50))}")
        rows["category"].append(category)
        rows["brand"].append(None)
        rows["order_id"].append(order)
        rows["event_id"].append(f"e{len(rows['event_id'])}")
        rows["price"].append(price)

    for i in range(personas):
        pid = f"persona-{i:05d}"
        rate = rng.gamma(0.6, 1 / 20)  # purchases per day
        fashion = rng.beta(0.5, 0.5)
        n = rng.poisson(rate * DAYS)
        for k, day in enumerate(np.sort(rng.uniform(0, DAYS, n))):
            category = "fashion/women" if rng.random() < fashion else "home/kitchen"
            for _ in range(int(rng.integers(1, 4))):
                add(pid, max(0.0, day - rng.uniform(1, 6)), "add_to_cart", category)
            add(pid, day, "purchase", category, order=f"o{i}-{k}", price=float(rng.gamma(2, 20)))
        for day in rng.uniform(0, DAYS, rng.poisson(3)):
            add(pid, day, "product_view", "home/decor")
    schema = pa.schema([(k, TS_TYPE if k == "ts" else pa.float64() if k == "price" else pa.string()) for k in rows])
    return pa.table(rows, schema=schema)


def small_config(tmp_path, segments, **training) -> JobConfig:
    base = {
        "num_boost_round": 40,
        "early_stopping_rounds": 8,
        "report_every": 10,
        "min_positives": 30,
        "min_negatives": 30,
        "max_failures": 0,
        "params": {
            "objective": "binary:logistic",
            "eval_metric": ["logloss", "auc"],
            "tree_method": "hist",
            "max_depth": 3,
            "eta": 0.2,
            "min_child_weight": 5,
        },
    }
    return JobConfig(
        root=str(tmp_path),
        ray={"num_partitions": 2},
        features={"categories": CATEGORIES},
        segments=segments,
        training=base | training,
    )


def plan_for(config: JobConfig, events: pa.Table, run_id: str = "r1") -> RunPlan:
    """The run plan `build_plan` decides for these events (as_of = the day after the last event)."""
    last = max(events.column("ts").to_pylist()).date()
    return build_plan(run_id, last, PlanView.from_config(config), EventFacts(last_day=last, events_per_category_day={}))


def stand_in_features(events: pa.Table, as_of: dt.date, config: JobConfig, leak: bool = False) -> pa.Table:
    """The features table at `as_of` (catalogue schema), from events before it (pandas: test-sized data)."""
    df = events.to_pandas()
    cut = pd.Timestamp(dt.datetime.combine(as_of, dt.time(0), tzinfo=UTC))
    past = df[df["ts"] < cut]
    buys = past[past["event_type"] == "purchase"]
    ids = pd.Index(sorted(df["persona_id"].dropna().unique()), name="persona_id")
    values = {
        "orders_365d": buys.groupby("persona_id")["order_id"].nunique().reindex(ids).fillna(0),
        "revenue_365d": buys.groupby("persona_id")["price"].sum().reindex(ids).fillna(0.0),
        "days_since_last_purchase": (cut - buys.groupby("persona_id")["ts"].max().reindex(ids)).dt.total_seconds()
        / 86400.0,
    }
    carts = past[(past["event_type"] == "add_to_cart") & (past["ts"] >= cut - pd.Timedelta(days=7))]
    values["carts_7d"] = carts.groupby("persona_id").size().reindex(ids).fillna(0)
    for slot, name in enumerate(CATEGORIES):
        in_category = buys[buys["category"].str.startswith(name)]
        values[f"cat{slot:02d}_purchases_365d"] = in_category.groupby("persona_id").size().reindex(ids).fillna(0)
    values[NOISE] = pd.Series(np.random.default_rng(as_of.toordinal()).normal(size=len(ids)), index=ids)
    if leak:  # what a feature that peeks past the cut-off looks like
        window = (df["ts"] >= cut) & (df["ts"] < cut + pd.Timedelta(days=30)) & (df["event_type"] == "purchase")
        values[NOISE] = df[window].groupby("persona_id").size().reindex(ids).fillna(0).astype("float64")
    schema = feature_schema(config.features)
    columns = {"persona_id": pa.array(ids.to_numpy(), pa.string()), "as_of": pa.array([as_of] * len(ids), pa.date32())}
    for field in schema:
        if field.name in columns:
            continue
        if field.name in values:
            columns[field.name] = pa.array(values[field.name].to_numpy(), field.type)
        elif pa.types.is_integer(field.type):
            columns[field.name] = pa.array(np.zeros(len(ids), dtype=np.int64))
        else:
            columns[field.name] = pa.array(np.full(len(ids), np.nan))
    return pa.table(columns, schema=schema)


def publish_events(table_path: str, events: pa.Table, storage) -> None:
    with writing(table_path, storage) as writer:
        writer.write_arrow(events)


def publish_features(table_path: str, events: pa.Table, plan: RunPlan, config: JobConfig, leak: bool = False) -> None:
    """The features table as the features stage publishes it: one partition per snapshot of the plan."""
    extra = {"categories": list(plan.categories), "snapshots": [d.isoformat() for d in plan.snapshots]}
    with writing(table_path, config.storage, extra) as writer:
        for as_of in plan.snapshots:
            writer.write_arrow(stand_in_features(events, as_of, config, leak), partition={"as_of": as_of})
