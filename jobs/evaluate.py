"""`segments evaluate-personas`: personas against a ground-truth column, and what an oracle would score.

Pairwise metrics over events: two events are a predicted pair when they share a persona_id (an event with
persona_id null pairs with nothing) and a true pair when they share the truth value. precision = true
pairs among predicted pairs, recall = predicted true pairs among true pairs. Also:
  * person completeness: per true person, the share of their events in their largest persona (mean);
  * persona purity: per persona, the share of its events that belong to its main true person (mean).
The oracle reruns the same identity resolution on the same rows, with the junk rules replaced by the truth
(an identifier used by two or more people is junk): the score that perfect junk detection would reach.

This is the only module that reads the ground truth. Everything is computed on hash partitions; the driver
only sums small per-partition figures.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs import io
from jobs.config import JobConfig
from jobs.errors import UserError

log = logging.getLogger(__name__)

TRUTH = "_truth"
PAIR_COLUMNS = ["persona_id", TRUTH]


def _c2(n: np.ndarray) -> int:
    n = n.astype(np.int64)
    return int((n * (n - 1) // 2).sum())


def cells(rows: pa.Table) -> pa.Table:
    """(persona_id, _truth, n) counts; rows without truth are left out."""
    rows = rows.filter(pc.is_valid(rows.column(TRUTH)))
    if rows.num_rows == 0:
        return pa.table({"persona_id": pa.array([], pa.string()), TRUTH: pa.array([], pa.string()),
                         "n": pa.array([], pa.int64())})
    out = rows.group_by(PAIR_COLUMNS, use_threads=False).aggregate([([], "count_all")])
    return out.rename_columns([{"count_all": "n"}.get(c, c) for c in out.column_names]).select(["persona_id", TRUTH, "n"])


def _merge_cells(part: pa.Table) -> pa.Table:
    """Cells of one (persona, truth) can come from several blocks: sum them."""
    if part.num_rows == 0:
        return part
    out = part.group_by(PAIR_COLUMNS, use_threads=False).aggregate([("n", "sum")])
    return out.rename_columns([{"n_sum": "n"}.get(c, c) for c in out.column_names]).select(["persona_id", TRUTH, "n"])


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
    return {"true_pairs": _c2(totals), "completeness_sum": float((best / np.maximum(totals, 1)).sum()),
            "persons": int(len(totals)), "events": int(n.sum())}


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
    return {"pred_pairs": _c2(totals), "tp_pairs": _c2(n), "purity_sum": float((best / totals).sum()),
            "personas": int(len(totals)), "events_with_persona": int(n.sum())}


def combine(truth_parts: list[dict], persona_parts: list[dict]) -> dict[str, Any]:
    t = {k: sum(p[k] for p in truth_parts) for k in truth_parts[0]}
    p = {k: sum(x[k] for x in persona_parts) for k in persona_parts[0]}
    precision = p["tp_pairs"] / p["pred_pairs"] if p["pred_pairs"] else 1.0
    recall = p["tp_pairs"] / t["true_pairs"] if t["true_pairs"] else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "pairwise_precision": round(precision, 5), "pairwise_recall": round(recall, 5), "pairwise_f1": round(f1, 5),
        "person_completeness": round(t["completeness_sum"] / t["persons"], 5) if t["persons"] else None,
        "persona_purity": round(p["purity_sum"] / p["personas"], 5) if p["personas"] else None,
        "events": t["events"], "events_with_persona_share": round(p["events_with_persona"] / t["events"], 5) if t["events"] else None,
        "true_persons": t["persons"], "personas": p["personas"],
    }


def metrics_local(persona_id: pa.Array, truth: pa.Array) -> dict[str, Any]:
    """The same metrics in one process (tests, benchmark)."""
    c = cells(pa.table({"persona_id": persona_id, TRUTH: pc.cast(truth, pa.string())}))
    return combine([truth_side(c)], [persona_side(c)])


def _cells_task(block: pa.Table, truth_column: str) -> pa.Table:
    return cells(pa.table({"persona_id": block.column("persona_id"), TRUTH: pc.cast(block.column(truth_column), pa.string())}))


def metrics_distributed(blocks: list, truth_column: str | None, num_partitions: int) -> dict[str, Any]:
    """blocks: refs of tables with persona_id and the truth column (named `truth_column`, or `_truth`)."""
    import ray

    from jobs.raykit.shuffle import hash_partition

    cells_t = ray.remote(_cells_task)
    c = [cells_t.remote(b, truth_column or TRUTH) for b in blocks]
    by_truth = hash_partition(c, [TRUTH], num_partitions)
    by_persona = hash_partition(c, ["persona_id"], num_partitions)
    truth_parts = ray.get([ray.remote(truth_side).remote(p) for p in by_truth])
    persona_parts = ray.get([ray.remote(persona_side).remote(p) for p in by_persona])
    return combine(truth_parts, persona_parts)


def _join_truth(ep: pa.Table, truth_rows: pa.Table) -> pa.Table:
    """Co-partitioned by (partner_id, event_id): (persona_id, _truth) of the oracle's personas."""
    joined = ep.select(["partner_id", "event_id", "persona_id"]).join(
        truth_rows, ["partner_id", "event_id"], join_type="inner", use_threads=False)
    return joined.select(["persona_id", TRUTH])


def _truth_rows(block: pa.Table, truth_column: str) -> pa.Table:
    return pa.table({"partner_id": block.column("partner_id"), "event_id": block.column("event_id"),
                     TRUTH: pc.cast(block.column(truth_column), pa.string())})


def oracle_distributed(blocks: list, config: JobConfig, truth_column: str) -> dict[str, Any]:
    """Identity resolution of the same rows with the truth as the junk detector, then the same metrics."""
    import ray

    from jobs.resolve import _t_slim_truth, blocklists, resolve_identity
    from jobs.raykit.shuffle import hash_partition, map_exchange

    P = config.ray.num_partitions
    bl_e, bl_p = blocklists(config.identity)
    (slim,) = map_exchange(_t_slim_truth, [(b, bl_e, bl_p, truth_column) for b in blocks],
                           [["partner_id", "_skey"]], P)
    refs = resolve_identity(slim, config, P, truth=True, oracle=True)
    truth = hash_partition([ray.remote(_truth_rows).remote(b, truth_column) for b in blocks], ["partner_id", "event_id"], P)
    joined = [ray.remote(_join_truth).remote(e, t) for e, t in zip(refs.event_personas, truth)]
    out = metrics_distributed(joined, None, P)
    out["identifiers_audited"] = sum(ray.get([ray.remote(lambda t: t.num_rows).remote(a) for a in refs.audit]))
    return out


def run_evaluate_personas(config: JobConfig, run_dir: str, truth_column: str = "true_person_id") -> dict[str, Any]:
    """The `segments evaluate-personas` command: metrics of the run's personas and of the oracle."""
    from jobs.raykit.session import ray_session

    started = time.perf_counter()
    layout = io.RunLayout(run_dir)
    table = layout.table("events_resolved")
    marker = io.read_marker(table, config.storage)
    files = io.table_files(table, config.storage)
    if not files:
        raise UserError(f"{table} has no rows to evaluate.")
    import pyarrow.parquet as pq

    fs, _ = io.filesystem_for(files[0], config.storage)
    first = files[0][len("s3://"):] if io.is_s3(files[0]) else files[0]
    with fs.open_input_file(first) as handle:
        names = pq.read_schema(handle).names
    if truth_column not in names:
        raise UserError(f"{table} has no ground-truth column {truth_column!r} (columns: {', '.join(names)}).")
    with ray_session(config.ray):
        ds = io.read_dataset(table, config.storage)
        blocks = ds.to_arrow_refs()
        result = metrics_distributed(blocks, truth_column, config.ray.num_partitions)
        result["oracle"] = oracle_distributed(blocks, config, truth_column)
        del blocks
    result["rows"] = marker.get("rows")
    result["identifiers_audited"] = io.read_marker(layout.table("identity_audit"), config.storage).get("rows")
    result["truth_column"] = truth_column
    result["seconds"] = round(time.perf_counter() - started, 2)
    io.write_json(layout.path("evaluation", "personas.json"), result, config.storage)
    log.info("evaluate-personas: precision %.4f recall %.4f F1 %.4f (oracle %.4f / %.4f)",
             result["pairwise_precision"], result["pairwise_recall"], result["pairwise_f1"],
             result["oracle"]["pairwise_precision"], result["oracle"]["pairwise_recall"])
    return result
