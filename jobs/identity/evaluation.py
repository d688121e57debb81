"""Personas against a ground-truth column, and what an oracle would score.

Pairwise metrics over events: two events are a predicted pair when they share a persona_id (an event with
persona_id null pairs with nothing) and a true pair when they share the truth value. precision = true
pairs among predicted pairs, recall = predicted true pairs among true pairs. Also:
  * person completeness: per true person, the share of their events in their largest persona (mean);
  * persona purity: per persona, the share of its events that belong to its main true person (mean).
The oracle reruns the same identity resolution on the same rows, with the junk rules replaced by the truth
(an identifier used by two or more people is junk): the score that perfect junk detection would reach.

This is the only module that reads the ground truth. Everything runs as partition steps over an executor
(`jobs.identity.rounds`); only small per-partition figures are summed at the end.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs.config import IdentityConfig
from jobs.identity import junk, steps
from jobs.identity.graph import TRUTH
from jobs.identity.rounds import Executor, count_rows, resolve_identity

PAIR_COLUMNS = ["persona_id", TRUTH]
CELL_SCHEMA = pa.schema([("persona_id", pa.string()), (TRUTH, pa.string()), ("n", pa.int64())])


def _pairs(n: np.ndarray) -> int:
    n = n.astype(np.int64)
    return int((n * (n - 1) // 2).sum())


def cells(rows: pa.Table, truth_column: str) -> pa.Table:
    """(persona_id, _truth, n) event counts of one block; rows without truth are left out."""
    rows = pa.table({"persona_id": rows.column("persona_id"), TRUTH: pc.cast(rows.column(truth_column), pa.string())})
    rows = rows.filter(pc.is_valid(rows.column(TRUTH)))
    if rows.num_rows == 0:
        return CELL_SCHEMA.empty_table()
    out = rows.group_by(PAIR_COLUMNS, use_threads=False).aggregate([([], "count_all")])
    return out.select([*PAIR_COLUMNS, "count_all"]).rename_columns(CELL_SCHEMA.names)


def cells_both_ways(rows: pa.Table, truth_column: str) -> tuple[pa.Table, pa.Table]:
    """The cells of a block twice: one copy to partition by truth, one by persona."""
    out = cells(rows, truth_column)
    return out, out


def _merge_cells(part: pa.Table) -> pa.Table:
    """Cells of one (persona, truth) can come from several blocks: sum them."""
    if part.num_rows == 0:
        return part
    out = part.group_by(PAIR_COLUMNS, use_threads=False).aggregate([("n", "sum")])
    return out.select([*PAIR_COLUMNS, "n_sum"]).rename_columns(CELL_SCHEMA.names)


def truth_side(part: pa.Table) -> dict[str, float]:
    """Cells co-partitioned by truth: true pairs, completeness sum, persons."""
    part = _merge_cells(part)
    if part.num_rows == 0:
        return {"true_pairs": 0, "completeness_sum": 0.0, "persons": 0, "events": 0}
    truth_codes = pc.dictionary_encode(part.column(TRUTH).combine_chunks()).indices.to_numpy()
    n = part.column("n").to_numpy()
    has_p = pc.is_valid(part.column("persona_id")).to_numpy(zero_copy_only=False)
    totals = np.bincount(truth_codes, weights=n).astype(np.int64)
    best = np.zeros(len(totals), np.int64)
    np.maximum.at(best, truth_codes[has_p], n[has_p])
    return {
        "true_pairs": _pairs(totals),
        "completeness_sum": float((best / np.maximum(totals, 1)).sum()),
        "persons": int(len(totals)),
        "events": int(n.sum()),
    }


def persona_side(part: pa.Table) -> dict[str, float]:
    """Cells co-partitioned by persona: predicted pairs, correct pairs, purity sum, personas."""
    part = _merge_cells(part)
    part = part.filter(pc.is_valid(part.column("persona_id")))
    if part.num_rows == 0:
        return {"pred_pairs": 0, "tp_pairs": 0, "purity_sum": 0.0, "personas": 0, "events_with_persona": 0}
    codes = pc.dictionary_encode(part.column("persona_id").combine_chunks()).indices.to_numpy()
    n = part.column("n").to_numpy()
    totals = np.bincount(codes, weights=n).astype(np.int64)
    best = np.zeros(len(totals), np.int64)
    np.maximum.at(best, codes, n)
    return {
        "pred_pairs": _pairs(totals),
        "tp_pairs": _pairs(n),
        "purity_sum": float((best / totals).sum()),
        "personas": int(len(totals)),
        "events_with_persona": int(n.sum()),
    }


def combine(truth_parts: list[dict], persona_parts: list[dict]) -> dict[str, Any]:
    """The metrics from the per-partition sums."""
    t = {k: sum(p[k] for p in truth_parts) for k in truth_parts[0]}
    p = {k: sum(x[k] for x in persona_parts) for k in persona_parts[0]}
    precision = p["tp_pairs"] / p["pred_pairs"] if p["pred_pairs"] else 1.0
    recall = p["tp_pairs"] / t["true_pairs"] if t["true_pairs"] else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "pairwise_precision": round(precision, 5),
        "pairwise_recall": round(recall, 5),
        "pairwise_f1": round(f1, 5),
        "person_completeness": round(t["completeness_sum"] / t["persons"], 5) if t["persons"] else None,
        "persona_purity": round(p["purity_sum"] / p["personas"], 5) if p["personas"] else None,
        "events": t["events"],
        "events_with_persona_share": round(p["events_with_persona"] / t["events"], 5) if t["events"] else None,
        "true_persons": t["persons"],
        "personas": p["personas"],
    }


def pairwise_metrics(ex: Executor, blocks: list, truth_column: str) -> dict[str, Any]:
    """Metrics of blocks (tables, or handles of them) holding `persona_id` and the truth column."""
    by_truth, by_persona = ex.map(cells_both_ways, [(b, truth_column) for b in blocks], [[TRUTH], ["persona_id"]])
    (truth_parts,) = ex.map(truth_side, [(p,) for p in by_truth], [None])
    (persona_parts,) = ex.map(persona_side, [(p,) for p in by_persona], [None])
    return combine(ex.get(truth_parts), ex.get(persona_parts))


def truth_rows(block: pa.Table, truth_column: str) -> pa.Table:
    """(partner_id, event_id, _truth) of resolved events."""
    return pa.table(
        {
            "partner_id": block.column("partner_id"),
            "event_id": block.column("event_id"),
            TRUTH: pc.cast(block.column(truth_column), pa.string()),
        }
    )


def join_truth(event_persona: pa.Table, truth: pa.Table) -> pa.Table:
    """Co-partitioned by (partner_id, event_id): (persona_id, _truth) of the oracle's personas."""
    joined = event_persona.select(["partner_id", "event_id", "persona_id"]).join(
        truth, ["partner_id", "event_id"], join_type="inner", use_threads=False
    )
    return joined.select(["persona_id", TRUTH])


def oracle_metrics(ex: Executor, blocks: list, config: IdentityConfig, truth_column: str) -> dict[str, Any]:
    """Identity resolution of the same rows with the truth as the junk detector, then the same metrics."""
    blocklists = junk.blocklists(config)
    (slim,) = ex.map(steps.slim_with_truth, [(b, *blocklists, truth_column) for b in blocks], [["partner_id", "_skey"]])
    identity = resolve_identity(ex, slim, config, truth=True, oracle=True)
    (truth,) = ex.map(truth_rows, [(b, truth_column) for b in blocks], [["partner_id", "event_id"]])
    (joined,) = ex.map(join_truth, [(e, t) for e, t in zip(identity.event_personas, truth)], [None])
    out = pairwise_metrics(ex, joined, TRUTH)
    out["identifiers_audited"] = count_rows(ex, identity.audit)
    return out
