"""Keeping junk out of linking: a blocklist plus rules learned from the data, each with an audit row.

Per identifier (`node_stats`, on a hash partition of identifiers) the figures are:
  * emails, phones, customer and subscriber records: distinct devices they were used on (fan-out);
  * devices: distinct people-like identifiers seen on them = max(distinct emails, distinct phones), and the
    most distinct customer records at any one partner;
  * click tokens: distinct devices that clicked them (a forwarded campaign link).
The thresholds are learned from the distribution of each figure over all identifiers of its type: the
figure's histogram is summed over partitions (small integer counts only reach the driver) and the
threshold is Tukey's far-out fence `Q3 + 3 * IQR`, never below a floor (a person plausibly owning that
many). A config value > 0 replaces the learned threshold. An identifier above its threshold is kept out
of linking and written to identity_audit with the rule, the figure and the threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from jobs.arrays import distinct, whole
from jobs.config import IdentityConfig
from jobs.contract.normalise import normalised_email_blocklist, phone_blocklist_digits
from jobs.identity.graph import (
    CLICK,
    CUSTOMER,
    DEVICE,
    EMAIL,
    PHONE,
    SUBSCRIBER,
    TRUTH,
    dictionary_codes,
    distinct_pairs,
    sorted_runs,
)

AUDIT_SCHEMA = pa.schema(
    [
        ("identifier_type", pa.string()),
        ("identifier", pa.string()),
        ("partner_id", pa.string()),
        ("rule", pa.string()),
        ("figure", pa.float64()),
        ("threshold", pa.float64()),
        ("n_events", pa.int64()),
    ]
)

STATS_SCHEMA = pa.schema(
    [
        ("node", pa.uint64()),
        ("identifier_type", pa.string()),
        ("identifier", pa.string()),
        ("partner_id", pa.string()),
        ("first_seen", pa.timestamp("us", tz="UTC")),
        ("last_seen", pa.timestamp("us", tz="UTC")),
        ("n_events", pa.int64()),
        ("seen_at_partners", pa.list_(pa.string())),
        ("flag", pa.string()),
        ("n_anchors", pa.int64()),
        ("n_devices", pa.int64()),
        ("n_emails", pa.int64()),
        ("n_phones", pa.int64()),
        ("n_customers", pa.int64()),
        ("max_customers_at_partner", pa.int64()),
        ("n_variants", pa.int64()),
    ]
)

# (rule, identifier type, figure column) for the learned rules.
FANOUT_RULES = (
    ("email_fanout", EMAIL, "n_devices"),
    ("phone_fanout", PHONE, "n_devices"),
    ("customer_fanout", CUSTOMER, "n_devices"),
    ("subscriber_fanout", SUBSCRIBER, "n_devices"),
    ("shared_device", DEVICE, "n_people"),
    ("forwarded_click", CLICK, "n_devices"),
)
HIST_CAP = 1_000_000


def blocklists(config: IdentityConfig) -> tuple[list[str], list[str]]:
    """(emails, phone digits) never used for linking, normalised the way identifiers are."""
    return normalised_email_blocklist(config.blocklist_emails), phone_blocklist_digits(config.blocklist_phones)


def _distinct_in_groups(group: np.ndarray, code: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (group, code) pairs of rows, sorted by group then code; both non-negative integers (one
    int64 key per row, a single sort)."""
    width = int(code.max()) + 1 if len(code) else 1
    key = distinct(group.astype(np.int64) * width + code)
    return key // width, key % width


def _count_distinct(group: np.ndarray, groups: int, code: np.ndarray) -> np.ndarray:
    """Per group (0 .. groups - 1), how many distinct codes its rows hold."""
    return np.bincount(_distinct_in_groups(group, code)[0], minlength=groups).astype(np.int64)


def node_stats(occ: pa.Table, pairs: pa.Table, with_truth: bool = False) -> pa.Table:
    """Per identifier: identity_map columns, flag, and the figures of the junk rules (`STATS_SCHEMA`,
    + `n_truth` = distinct ground-truth people for the oracle). Vectorised: sorts and reduceat only."""
    if occ.num_rows == 0:
        schema = STATS_SCHEMA.append(pa.field("n_truth", pa.int64())) if with_truth else STATS_SCHEMA
        return schema.empty_table()
    node = occ.column("node").to_numpy()
    order, starts = sorted_runs(node)
    first = order[starts]
    nodes = node[first]
    group = np.empty(len(node), np.int64)  # each row's node as its rank among the nodes
    group[order] = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(node)]))
    fs = whole(occ.column("first_seen")).cast(pa.int64()).to_numpy(zero_copy_only=False)[order]
    ls = whole(occ.column("last_seen")).cast(pa.int64()).to_numpy(zero_copy_only=False)[order]
    ne = occ.column("n_events").to_numpy()[order]
    flag_codes, flag_dict = dictionary_codes(occ.column("flag"))
    flag_max = np.maximum.reduceat(flag_codes[order], starts)
    flag = (
        flag_dict.take(pa.array(np.where(flag_max >= 0, flag_max, 0)))
        if len(flag_dict)
        else pa.nulls(len(starts), pa.string())
    )
    flag = pc.if_else(pa.array(flag_max >= 0), flag, pa.scalar(None, pa.string()))
    # seen_at_partners: sorted distinct partners per node, as a list column built from offsets
    p_codes, p_dict = dictionary_codes(occ.column("partner_id"))
    p_rank = np.argsort(np.argsort(p_dict.to_numpy(zero_copy_only=False).astype(str), kind="stable"), kind="stable")
    up_group, up_rank = _distinct_in_groups(group, p_rank[np.maximum(p_codes, 0)])
    counts = np.bincount(up_group, minlength=len(nodes))
    offsets = np.r_[0, np.cumsum(counts)].astype(np.int32)
    inv_rank = np.argsort(p_rank, kind="stable")
    partners = pa.ListArray.from_arrays(pa.array(offsets), p_dict.take(pa.array(inv_rank[up_rank.astype(np.int64)])))
    n_anchors = _count_distinct(group, len(nodes), pd.factorize(occ.column("anchor").to_numpy())[0])
    n_variants = _count_distinct(group, len(nodes), dictionary_codes(occ.column("identifier"))[0] + 1)
    ts_type = pa.timestamp("us", tz="UTC")
    firsts = occ.select(["identifier_type", "identifier", "scope"]).take(pa.array(first))
    cols = {
        "node": pa.array(nodes, pa.uint64()),
        "identifier_type": firsts.column("identifier_type"),
        "identifier": firsts.column("identifier"),
        "partner_id": firsts.column("scope"),
        "first_seen": pa.array(np.minimum.reduceat(fs, starts), pa.int64()).cast(ts_type),
        "last_seen": pa.array(np.maximum.reduceat(ls, starts), pa.int64()).cast(ts_type),
        "n_events": pa.array(np.add.reduceat(ne, starts).astype(np.int64)),
        "seen_at_partners": partners,
        "flag": flag,
        "n_anchors": pa.array(n_anchors),
    }
    # figures from co-occurrence pairs
    zeros = np.zeros(len(nodes), np.int64)
    figure_names = ("n_devices", "n_emails", "n_phones", "n_customers", "max_customers_at_partner")
    figs = {name: zeros.copy() for name in figure_names}
    if pairs.num_rows:
        # the same pair can come from several session partitions: distinct first
        order_p, starts_p = sorted_runs(pairs.column("other").to_numpy(), pairs.column("node").to_numpy())
        pairs = pairs.take(pa.array(order_p[starts_p]))
        p_node = pairs.column("node").to_numpy()
        otype = pairs.column("other_type").to_numpy(zero_copy_only=False)
        for name, t in (("n_devices", DEVICE), ("n_emails", EMAIL), ("n_phones", PHONE), ("n_customers", CUSTOMER)):
            sel = otype == t
            g, c = np.unique(p_node[sel], return_counts=True)
            figs[name] = lookup(nodes, g, c.astype(np.int64), 0)
        sel = otype == CUSTOMER
        if sel.any():
            scope_codes = dictionary_codes(pairs.column("other_scope").filter(pa.array(sel)))[0]
            gp_node, _, c = distinct_pairs(p_node[sel], scope_codes.astype(np.uint64))
            order_g = np.lexsort((c, gp_node))
            last = np.r_[gp_node[order_g][1:] != gp_node[order_g][:-1], True]
            figs["max_customers_at_partner"] = lookup(nodes, gp_node[order_g][last], c[order_g][last], 0)
    for name, values in figs.items():
        cols[name] = pa.array(values.astype(np.int64))
    cols["n_variants"] = pa.array(n_variants)
    schema = STATS_SCHEMA
    if with_truth:
        n_truth = _count_distinct(group, len(nodes), dictionary_codes(occ.column(TRUTH))[0] + 1)
        cols["n_truth"] = pa.array(n_truth)
        schema = schema.append(pa.field("n_truth", pa.int64()))
    return pa.table(cols, schema=schema)


def lookup(keys: np.ndarray, table_keys: np.ndarray, table_values: np.ndarray, default) -> np.ndarray:
    """Vectorised left join of unique `table_keys` -> `table_values` onto `keys` (missing -> default)."""
    out = np.full(len(keys), default, dtype=np.asarray(table_values).dtype if len(table_values) else np.int64)
    if len(table_keys) == 0 or len(keys) == 0:
        return out
    order = np.argsort(table_keys, kind="stable")
    sk = table_keys[order]
    pos = np.minimum(np.searchsorted(sk, keys), len(sk) - 1)
    hit = sk[pos] == keys
    out[hit] = np.asarray(table_values)[order][pos[hit]]
    return out


def figure_values(stats: pa.Table, identifier_type: str, figure: str) -> np.ndarray:
    sub = stats.filter(
        pc.and_(pc.equal(stats.column("identifier_type"), identifier_type), pc.is_null(stats.column("flag")))
    )
    if figure == "n_people":
        return np.maximum(sub.column("n_emails").to_numpy(), sub.column("n_phones").to_numpy()).astype(np.int64)
    return sub.column(figure).to_numpy().astype(np.int64)


def histograms(stats: pa.Table) -> dict[str, np.ndarray]:
    """Per learned rule, the histogram of its figure over identifiers (bincount): what the driver sees."""
    out = {}
    for rule, t, fig in FANOUT_RULES:
        values = figure_values(stats, t, fig)
        values = values[values > 0]
        out[rule] = np.bincount(np.minimum(values, HIST_CAP)) if len(values) else np.zeros(1, np.int64)
    out["hash_collisions"] = np.array(
        [int(pc.sum(pc.greater(stats.column("n_variants"), 1)).as_py() or 0) if stats.num_rows else 0]
    )
    return out


def merge_histograms(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    merged: dict[str, np.ndarray] = {}
    for part in parts:
        for key, hist in part.items():
            cur = merged.get(key)
            if cur is None:
                merged[key] = hist.astype(np.int64).copy()
            else:
                size = max(len(cur), len(hist))
                merged[key] = np.pad(cur, (0, size - len(cur))) + np.pad(hist, (0, size - len(hist)))
    return merged


def _quantile_from_hist(hist: np.ndarray, q: float) -> float:
    total = hist.sum()
    if total == 0:
        return 0.0
    cum = np.cumsum(hist)
    return float(np.searchsorted(cum, q * total, side="left"))


@dataclass(frozen=True)
class Thresholds:
    """Largest allowed figure per rule (an identifier with a larger figure is junk), and how it was set."""

    values: dict[str, float]
    learned: dict[str, dict]


def learn_thresholds(hists: dict[str, np.ndarray], config: IdentityConfig) -> Thresholds:
    overrides = {
        "email_fanout": config.max_people_per_email,
        "phone_fanout": config.max_people_per_email,
        "customer_fanout": config.max_people_per_email,
        "subscriber_fanout": config.max_people_per_email,
        "shared_device": config.max_people_per_device,
        "forwarded_click": config.max_devices_per_click_token,
    }
    floors = {
        "email_fanout": config.min_fanout_devices,
        "phone_fanout": config.min_fanout_devices,
        "customer_fanout": config.min_fanout_devices,
        "subscriber_fanout": config.min_fanout_devices,
        "shared_device": config.min_people_per_shared_device - 1,
        "forwarded_click": 1,
    }
    values, learned = {}, {}
    for rule, _t, _f in FANOUT_RULES:
        hist = hists.get(rule, np.zeros(1, np.int64))
        q1, med, q3 = (_quantile_from_hist(hist, q) for q in (0.25, 0.5, 0.75))
        fence = q3 + config.fence_iqr_multiplier * (q3 - q1)
        auto = max(float(floors[rule]), math.floor(fence))
        chosen = float(overrides[rule]) if overrides[rule] else auto
        values[rule] = chosen
        learned[rule] = {
            "q1": q1,
            "median": med,
            "q3": q3,
            "fence": fence,
            "floor": floors[rule],
            "threshold": chosen,
            "source": "config" if overrides[rule] else "learned",
            "identifiers": int(hist.sum()),
        }
    values["customers_at_partner"] = float(config.max_customers_per_device_partner)
    learned["customers_at_partner"] = {"threshold": values["customers_at_partner"], "source": "config"}
    return Thresholds(values, learned)


def decide_junk(stats: pa.Table, thresholds: Thresholds, oracle: bool = False) -> tuple[pa.Table, np.ndarray]:
    """(audit rows, junk node ids) for one partition of node stats. Each junk identifier gets one audit
    row: the first rule that fires (flag, then the fan-out rules, then customers at one partner)."""
    n = stats.num_rows
    if n == 0:
        return AUDIT_SCHEMA.empty_table(), np.zeros(0, np.uint64)
    types = stats.column("identifier_type").to_numpy(zero_copy_only=False).astype(object)
    rule = np.full(n, None, dtype=object)
    figure = np.full(n, np.nan)
    threshold = np.full(n, np.nan)
    flag = stats.column("flag").to_numpy(zero_copy_only=False)
    has_flag = pc.is_valid(stats.column("flag")).to_numpy(zero_copy_only=False)
    rule[has_flag] = flag[has_flag]
    figure[has_flag] = stats.column("n_events").to_numpy()[has_flag]
    if oracle:
        n_truth = stats.column("n_truth").to_numpy()
        hit = (rule == None) & (n_truth > 1)  # noqa: E711 - numpy elementwise
        rule[hit], figure[hit], threshold[hit] = "oracle_shared", n_truth[hit], 1
    else:
        people = np.maximum(stats.column("n_emails").to_numpy(), stats.column("n_phones").to_numpy())
        for r, t, fig in FANOUT_RULES:
            values = people if fig == "n_people" else stats.column(fig).to_numpy()
            hit = (rule == None) & (types == t) & (values > thresholds.values[r])  # noqa: E711
            rule[hit], figure[hit], threshold[hit] = r, values[hit], thresholds.values[r]
        cust = stats.column("max_customers_at_partner").to_numpy()
        limit = thresholds.values["customers_at_partner"]
        hit = (rule == None) & (types == DEVICE) & (cust >= limit)  # noqa: E711
        rule[hit], figure[hit], threshold[hit] = "shared_device_customers", cust[hit], limit
    junk = rule != None  # noqa: E711 - numpy elementwise
    idx = np.flatnonzero(junk)
    sub = stats.take(pa.array(idx))
    audit = pa.table(
        {
            "identifier_type": sub.column("identifier_type"),
            "identifier": sub.column("identifier"),
            "partner_id": sub.column("partner_id"),
            "rule": pa.array(rule[idx].tolist(), pa.string()),
            "figure": pa.array(figure[idx], pa.float64()),
            "threshold": pa.array(threshold[idx], pa.float64()),
            "n_events": sub.column("n_events"),
        },
        schema=AUDIT_SCHEMA,
    )
    return audit, stats.column("node").to_numpy()[idx].astype(np.uint64)


def weak_link_decisions(weak: pa.Table, stats: pa.Table) -> tuple[pa.Table, np.ndarray]:
    """Co-partitioned by token node: a click token whose anchors belong to two or more *identified*
    personas (found without tokens) would merge identified people, so it is junk (`forwarded_click`,
    figure = identified personas it touches). Returns (audit rows, junk ids)."""
    if weak.num_rows == 0:
        return AUDIT_SCHEMA.empty_table(), np.zeros(0, np.uint64)
    ident = weak.filter(pc.fill_null(weak.column("identified"), False))
    if ident.num_rows == 0:
        return AUDIT_SCHEMA.empty_table(), np.zeros(0, np.uint64)
    per = ident.group_by(["node"], use_threads=False).aggregate([("persona_id", "count_distinct")])
    bad = per.filter(pc.greater(per.column("persona_id_count_distinct"), 1))
    if bad.num_rows == 0:
        return AUDIT_SCHEMA.empty_table(), np.zeros(0, np.uint64)
    ids = bad.column("node").to_numpy().astype(np.uint64)
    figure = bad.column("persona_id_count_distinct").to_numpy().astype(float)
    s_nodes = stats.column("node").to_numpy()
    order = np.argsort(s_nodes, kind="stable")
    pos = order[np.minimum(np.searchsorted(s_nodes[order], ids), len(order) - 1)]
    rows = stats.take(pa.array(pos))
    audit = pa.table(
        {
            "identifier_type": rows.column("identifier_type"),
            "identifier": rows.column("identifier"),
            "partner_id": rows.column("partner_id"),
            "rule": pa.array(["forwarded_click"] * len(ids), pa.string()),
            "figure": pa.array(figure),
            "threshold": pa.array([1.0] * len(ids)),
            "n_events": rows.column("n_events"),
        },
        schema=AUDIT_SCHEMA,
    )
    return audit, ids
