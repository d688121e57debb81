"""The report's run figures on Ray: segment sizes per partner, identifiers per persona, refusals per junk rule,
and the feature histograms drift compares between runs.

Each figure is per-block partial counts (a few rows per block) summed on the driver; the one join (scores x
the partners that saw each persona) is `jobs.raykit.join`'s: the (persona, partner) pairs go by reference to
every scores block's task while they are few enough (counted from their blocks' metadata), else a hash join.
No persona-sized table reaches the driver.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
import ray.data

from jobs.model.drift import feature_bins, merge_feature_bins
from jobs.raykit.join import join_datasets
from jobs.raykit.reduce import tree_reduce

IDENTIFIER_COUNTS = ("n_devices", "n_emails", "n_phones", "n_customers", "n_subscribers")
# personas by the identifiers they hold: 1, 2, 3, 4, 5-9, 10+
SIZE_BUCKETS = ((1, 1), (2, 2), (3, 3), (4, 4), (5, 9), (10, None))


def _summed(tables: Iterable[pa.Table], keys: list[str], values: list[str]) -> list[dict[str, Any]]:
    parts = [t for t in tables if t.num_rows]
    if not parts:
        return []
    total = pa.concat_tables(parts).group_by(keys).aggregate([(v, "sum") for v in values])
    return total.rename_columns([f"{c[:-4]}" if c.endswith("_sum") else c for c in total.column_names]).to_pylist()


def _partials(ds: ray.data.Dataset, fn) -> list[pa.Table]:
    return ray.get(ds.map_batches(fn, batch_format="pyarrow", batch_size=None).to_arrow_refs())


def _persona_partners(batch: pa.Table) -> pa.Table:
    flat = pc.list_flatten(batch.column("partners"))
    return pa.table(
        {
            "persona_id": batch.column("persona_id").take(pc.list_parent_indices(batch.column("partners"))),
            "partner": flat,
        }
    )


def _partner_counts(batch: pa.Table) -> pa.Table:
    member = pc.cast(pc.fill_null(batch.column("member"), False), pa.int64())
    counted = pa.table({"segment": batch.column("segment"), "partner": batch.column("partner"), "member": member})
    grouped = counted.group_by(["segment", "partner"]).aggregate([("member", "count"), ("member", "sum")])
    return pa.table(
        {
            "segment": grouped.column("segment"),
            "partner": grouped.column("partner"),
            "scored": grouped.column("member_count").cast(pa.int64()),
            "members": grouped.column("member_sum").cast(pa.int64()),
        }
    )


def partner_sizes(
    scores_ds: ray.data.Dataset, personas_ds: ray.data.Dataset, num_partitions: int
) -> dict[str, dict[str, dict[str, int]]]:
    """segment -> partner -> {scored, members}: a persona counts at every partner that has seen it."""
    pairs = personas_ds.map_batches(_persona_partners, batch_format="pyarrow")
    joined = join_datasets(scores_ds, pairs, ["persona_id"], "inner", num_partitions)
    out: dict[str, dict[str, dict[str, int]]] = {}
    for row in _summed(_partials(joined, _partner_counts), ["segment", "partner"], ["scored", "members"]):
        out.setdefault(row["segment"], {})[row["partner"]] = {"scored": row["scored"], "members": row["members"]}
    return out


def _identifier_counts(batch: pa.Table) -> pa.Table:
    held = np.zeros(batch.num_rows, np.int64)
    sums = {}
    for name in IDENTIFIER_COUNTS:
        values = pc.fill_null(batch.column(name), 0).to_numpy()
        held += values
        sums[name] = [int(values.sum())]
    buckets = {
        _bucket_name(lo, hi): [int(((held >= lo) & (held <= hi if hi is not None else True)).sum())]
        for lo, hi in SIZE_BUCKETS
    }
    return pa.table({"one": [1], "personas": [batch.num_rows], **sums, **buckets})


def _bucket_name(lo: int, hi: int | None) -> str:
    return str(lo) if lo == hi else (f"{lo}+" if hi is None else f"{lo}-{hi}")


def persona_figures(personas_ds: ray.data.Dataset | None) -> dict[str, Any]:
    """Personas, identifiers held per type, and personas by how many identifiers they hold (None: no personas)."""
    names = ["personas", *IDENTIFIER_COUNTS] + [_bucket_name(lo, hi) for lo, hi in SIZE_BUCKETS]
    rows = _summed(_partials(personas_ds, _identifier_counts), ["one"], names) if personas_ds is not None else []
    row = rows[0] if rows else dict.fromkeys(names, 0)
    return {
        "personas": int(row["personas"]),
        "identifiers_by_type": {name[2:]: int(row[name]) for name in IDENTIFIER_COUNTS},
        "identifiers_per_persona": {_bucket_name(lo, hi): int(row[_bucket_name(lo, hi)]) for lo, hi in SIZE_BUCKETS},
    }


def _rule_counts(batch: pa.Table) -> pa.Table:
    grouped = batch.select(["rule"]).group_by("rule").aggregate([("rule", "count")])
    return pa.table({"rule": grouped.column("rule"), "n": grouped.column("rule_count").cast(pa.int64())})


def refused_by_rule(audit_ds: ray.data.Dataset) -> dict[str, int]:
    """Identifiers kept out of linking, per junk rule (`identity_audit`)."""
    return {row["rule"]: int(row["n"]) for row in _summed(_partials(audit_ds, _rule_counts), ["rule"], ["n"])}


def feature_histogram(features_ds: ray.data.Dataset, names: list[str]) -> pa.Table:
    """The merged fine histogram of every named feature column (`jobs.model.drift`): per-block partials merged
    by a tree of Ray tasks; a row per (feature, occupied bin), whatever the persona count."""
    partials = features_ds.map_batches(
        feature_bins, fn_kwargs={"names": names}, batch_format="pyarrow", batch_size=None
    ).to_arrow_refs()
    return tree_reduce(partials, merge_feature_bins)
