"""`segments resolve`: events -> quarantine, events_resolved, identity_map, identity_audit, personas.

The work is a chain of pure functions over Arrow tables (jobs.contract, jobs.identity.*). The distributed
path runs each on hash partitions as Ray tasks (`jobs.raykit.shuffle`), with connected components as
large-star/small-star rounds; `resolve_local` runs the very same functions on whole tables in one process
with scipy's connected components (the benchmark baseline and a cross-check in the tests). The driver
only holds object references, small count dicts and the figures' histograms.

Partitions (P = config.ray.num_partitions):
  read blocks -(partner_id, event_id)-> dedupe, quarantine, slim identity rows
  slim rows -(partner_id, session or device)-> sessions, anchors, occurrences, co-occurrence pairs
  occurrences + pairs -(node)-> node stats + histograms -> [driver: thresholds] -> junk + audit
  sessions + junk ids -> linking edges, event->anchor map -> connected components -(node)-> labels
  labels + node stats -(label)-> personas, identity_map, anchor->persona (+ size-cap hubs: repeat)
  event map + anchor->persona -(anchor)-> event->persona -(partner_id, event_id)-> events_resolved

Click tokens are weak links: a first components pass runs without them, tokens that touch two identified
personas are audited (`forwarded_click`), then the final pass includes the rest. The ids of audited
identifiers (a small set: junk, not the edges) are handed to the session partitions as task arguments.
Every exchange is one wave of map tasks that hash-split their own outputs plus one concat wave
(`jobs.raykit.shuffle.map_exchange`); the largest object on a worker is one partition.
"""

from __future__ import annotations

import logging
import resource
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs import contract, io
from jobs.config import IdentityConfig, JobConfig
from jobs.errors import UserError
from jobs.identity import components, graph, junk, personas
from jobs.contract.normalise import normalised_email_blocklist, phone_blocklist_digits

log = logging.getLogger(__name__)

EVENT_MAP_SCHEMA = pa.schema([("partner_id", pa.string()), ("event_id", pa.string()), ("anchor", pa.uint64()),
                              ("session_key", pa.string())])
EVENT_PERSONA_SCHEMA = pa.schema([("partner_id", pa.string()), ("event_id", pa.string()),
                                  ("persona_id", pa.string()), ("session_key", pa.string())])
INTERNAL = (contract.SOURCE, contract.REASON, contract.TS_RAW)


# ------------------------------------------------------------------------------------------ pure steps

def blocklists(config: IdentityConfig) -> tuple[list[str], list[str]]:
    return normalised_email_blocklist(config.blocklist_emails), phone_blocklist_digits(config.blocklist_phones)


def input_step(part: pa.Table, bl_emails: list[str], bl_phones: list[str]) -> tuple[pa.Table, pa.Table, pa.Table]:
    """One (partner_id, event_id) partition -> (kept full rows, quarantined rows, slim rows with `_skey`)."""
    kept, bad = contract.dedupe(part)
    slim = graph.session_partition_key(graph.slim_events(kept, bl_emails, bl_phones))
    return kept, bad, slim


def session_step(slim: pa.Table, gap_minutes: int, keep_truth: bool = False) -> tuple[pa.Table, pa.Table, pa.Table]:
    """One session partition -> (sessionised slim rows, occurrences, co-occurrence pairs)."""
    sess = graph.with_ids(graph.sessionise(slim, gap_minutes))
    occ = graph.occurrences(sess, graph.anchor_ids(sess), keep_truth=keep_truth)
    return sess, occ, graph.cooccurrence_pairs(occ)


def stats_step(occ: pa.Table, pairs: pa.Table, with_truth: bool = False) -> tuple[pa.Table, dict]:
    stats = junk.node_stats(occ, pairs, with_truth=with_truth)
    return stats, junk.histograms(stats)


def junk_step(stats: pa.Table, thresholds: junk.Thresholds, oracle: bool = False) -> tuple[pa.Table, np.ndarray, pa.Table]:
    """(audit rows, junk ids, stats of the identifiers that link)."""
    audit, junk_ids = junk.decide_junk(stats, thresholds, oracle=oracle)
    keep = pc.invert(pc.is_in(stats.column("node"), pa.array(junk_ids, pa.uint64())))
    return audit, junk_ids, stats.filter(keep)


def join_labels(stats: pa.Table, labels: pa.Table, extra_junk: np.ndarray | None = None) -> tuple[pa.Table, pa.Table]:
    """Co-partitioned by node: (identifier rows with their label, anchor rows (node, label)).

    Identifiers removed later (size cap) are dropped here; a node in `labels` but not in `stats` is an anchor.
    """
    if extra_junk is not None and len(extra_junk):
        stats = stats.filter(pc.invert(pc.is_in(stats.column("node"), pa.array(extra_junk, pa.uint64()))))
    lab_nodes = labels.column("node").to_numpy()
    lab_values = labels.column("label").to_numpy()
    nodes = stats.column("node").to_numpy()
    order = np.argsort(lab_nodes, kind="stable")
    pos = np.minimum(np.searchsorted(lab_nodes[order], nodes), max(len(order) - 1, 0))
    hit = (lab_nodes[order][pos] == nodes) if len(order) else np.zeros(len(nodes), bool)
    idents = stats.filter(pa.array(hit))
    idents = idents.append_column("label", pa.array(lab_values[order][pos[hit]], pa.uint64()))
    idents = idents.select(personas.IDENT_COLUMNS)
    is_ident = np.isin(lab_nodes, nodes)
    anchors = labels.filter(pa.array(~is_ident))
    return idents, anchors


def event_personas(event_map: pa.Table, anchor_persona: pa.Table) -> pa.Table:
    """Co-partitioned by anchor: (partner_id, event_id, persona_id, session_key)."""
    joined = event_map.join(anchor_persona, "anchor", join_type="left outer", use_threads=False)
    return joined.select(EVENT_PERSONA_SCHEMA.names).cast(EVENT_PERSONA_SCHEMA)


def attach(kept: pa.Table, ep: pa.Table) -> pa.Table:
    """Co-partitioned by (partner_id, event_id): the events_resolved rows."""
    base = kept.drop_columns([c for c in INTERNAL if c in kept.column_names])
    if base.num_rows == 0:
        return base.append_column("persona_id", pa.array([], pa.string())).append_column(
            "session_key", pa.array([], pa.string()))
    joined = base.join(ep, ["partner_id", "event_id"], join_type="left outer", use_threads=False)
    order = [c for c in base.column_names] + ["persona_id", "session_key"]
    return joined.select(order)


def with_size_cap_audit(hubs: pa.Table, cap: int) -> pa.Table:
    return pa.table({
        "identifier_type": hubs.column("identifier_type"), "identifier": hubs.column("identifier"),
        "partner_id": hubs.column("partner_id"), "rule": pa.array(["size_cap"] * hubs.num_rows, pa.string()),
        "figure": hubs.column("figure"), "threshold": pa.array([float(cap)] * hubs.num_rows),
        "n_events": hubs.column("n_events"),
    }, schema=junk.AUDIT_SCHEMA)


# ------------------------------------------------------------------------------------- single process

def resolve_local(events: pa.Table, config: JobConfig, truth_column: str | None = None,
                  oracle: bool = False) -> dict[str, Any]:
    """The same work in one process: whole tables, scipy connected components. `events` = normalised
    batches (contract.read_events_local). Returns the output tables and the summary figures."""
    ident = config.identity
    bl_e, bl_p = blocklists(ident)
    kept, bad = contract.dedupe(events)
    slim = graph.slim_events(kept, bl_e, bl_p, truth_column=truth_column)
    sess, occ, pairs = session_step(slim, ident.session_gap_minutes, keep_truth=truth_column is not None)
    stats, hist = stats_step(occ, pairs, with_truth=truth_column is not None)
    thresholds = junk.learn_thresholds(hist, ident)
    audit, junk_ids, linked = junk_step(stats, thresholds, oracle=oracle)
    audits = [audit]
    extra = np.zeros(0, np.uint64)
    last = ident.size_cap_rounds + 1
    for round_ in range(last + 1):
        strong, weak, event_map = graph.linking_edges(sess, np.concatenate([junk_ids, extra]))
        edges = strong if round_ == 0 else pa.concat_tables([strong, weak])
        labels = components.connected_components_local(edges)
        idents, anchors = join_labels(linked, labels, extra)
        out = personas.build_personas(idents, anchors, ident.max_persona_identifiers)
        if round_ == 0:  # identified personas without click tokens: which tokens would merge two of them
            wp = graph.weak_with_personas(weak, out["anchor_persona"])
            audit_w, ids_w = junk.weak_link_decisions(wp, linked)
            audits.append(audit_w)
            extra = np.concatenate([extra, ids_w])
            continue
        if out["hubs"].num_rows == 0 or round_ == last:
            break
        audits.append(with_size_cap_audit(out["hubs"], ident.max_persona_identifiers))
        extra = np.concatenate([extra, out["hubs"].column("node").to_numpy()])
    ep = event_personas(event_map, out["anchor_persona"])
    resolved = attach(kept, ep)
    return {"events_resolved": resolved, "quarantine": bad, "identity_map": out["identity_map"],
            "personas": out["personas"], "identity_audit": pa.concat_tables(audits), "thresholds": thresholds,
            "hash_collisions": int(hist["hash_collisions"].sum())}


# ---------------------------------------------------------------------------------------- distributed

def _remote(fn, num_returns: int = 1):
    import ray

    return ray.remote(num_returns=num_returns)(fn)


def _t_input(part, bl_e, bl_p):
    kept, bad, slim = input_step(part, bl_e, bl_p)
    return kept, slim, bad, {"kept": kept.num_rows, "reasons": contract.reason_counts(bad)}


def _t_slim_truth(block, bl_e, bl_p, truth_column):
    slim = graph.slim_events(block, bl_e, bl_p, truth_column=truth_column)
    return graph.session_partition_key(slim)


def _t_stats(occ, pairs, with_truth):
    return stats_step(occ, pairs, with_truth)


def _t_junk(stats, thresholds, oracle):
    audit, ids, linked = junk_step(stats, thresholds, oracle)
    return audit, linked, ids


def _t_edges(sess, *junk_parts):
    ids = np.concatenate([np.asarray(j, dtype=np.uint64) for j in junk_parts]) if junk_parts else np.zeros(0, np.uint64)
    strong, weak, event_map = graph.linking_edges(sess, ids)
    return strong, weak, event_map


def _t_drop_dst(edges, *junk_parts):
    ids = np.concatenate([np.asarray(j, dtype=np.uint64) for j in junk_parts]) if junk_parts else np.zeros(0, np.uint64)
    return edges.filter(pa.array(~np.isin(edges.column("dst").to_numpy(), ids)))


def _t_labels_as_edges(labels):
    return pa.table({"src": labels.column("node"), "dst": labels.column("label")})


def _t_join(stats, labels, *extra):
    ids = np.concatenate([np.asarray(j, dtype=np.uint64) for j in extra]) if extra else None
    return join_labels(stats, labels, ids)


def _t_personas(idents, anchors, cap):
    out = personas.build_personas(idents, anchors, cap)
    hubs = out["hubs"]
    return (out["personas"], out["identity_map"], out["anchor_persona"], hubs,
            hubs.column("node").to_numpy().astype(np.uint64),
            {"personas": out["personas"].num_rows, "hubs": hubs.num_rows})


def _t_weak_decide(weak_with_persona, stats):
    audit, ids = junk.weak_link_decisions(weak_with_persona, stats)
    return audit, ids


def _t_attach(kept, ep):
    resolved = attach(kept, ep)
    return resolved, {"rows": resolved.num_rows,
                      "with_persona": int(pc.sum(pc.is_valid(resolved.column("persona_id"))).as_py() or 0)}


def _t_rows(table):
    return table.num_rows


@dataclass
class IdentityRefs:
    """Object refs of the identity outputs (P partitions each) and the summary figures."""

    personas: list
    identity_map: list
    audit: list
    event_personas: list  # partitioned by (partner_id, event_id)
    figures: dict


def resolve_identity(slim_parts: list, config: JobConfig, num_partitions: int, truth: bool = False,
                     oracle: bool = False) -> IdentityRefs:
    """Slim identity rows partitioned by (partner_id, _skey) -> personas, identity_map, audit and
    event->persona refs. Every step is one wave of tasks that also hash-split its outputs."""
    import ray

    from jobs.raykit.shuffle import map_exchange

    ident, P = config.identity, num_partitions
    size_audit_t = _remote(with_size_cap_audit)
    sess, occ, pairs = map_exchange(session_step, [(p, ident.session_gap_minutes, truth) for p in slim_parts],
                                    [None, ["node"], ["node"]], P)
    stats, hists = map_exchange(_t_stats, [(o, q, truth) for o, q in zip(occ, pairs)], [None], P, scalar_outputs=1)
    merged = junk.merge_histograms(ray.get(hists))
    thresholds = junk.learn_thresholds(merged, ident)
    audits, linked, junk_ids = map_exchange(_t_junk, [(s, thresholds, oracle) for s in stats], [None, None], P,
                                            scalar_outputs=1)
    del stats
    extra: list = []
    rounds_info = []
    last = ident.size_cap_rounds + 1
    filter_t, as_edges_t = _remote(_t_drop_dst), _remote(_t_labels_as_edges)
    for round_ in range(last + 1):
        if round_ == 1:
            # warm start: the first pass's stars (node -> label) connect exactly what the strong edges do,
            # so only the kept weak edges are added to them
            kept_weak = [filter_t.remote(w, *extra) for w in weak]
            labels, info = components.connected_components([as_edges_t.remote(lab) for lab in labels] + kept_weak, P)
        else:
            strong, weak, event_map = map_exchange(_t_edges, [(s, *junk_ids, *extra) for s in sess],
                                                   [None, ["src"], ["anchor"]], P)
            labels, info = components.connected_components(strong if round_ == 0 else strong + weak, P)
        rounds_info.append(info["rounds"])
        idents, anchors = map_exchange(_t_join, [(s, lab, *extra) for s, lab in zip(linked, labels)],
                                       [["label"], ["label"]], P)
        p_personas, p_map, p_anchor, p_hubs, p_hub_ids, p_counts = map_exchange(
            _t_personas, [(i, a, ident.max_persona_identifiers) for i, a in zip(idents, anchors)],
            [None, None, ["anchor"], None], P, scalar_outputs=2)
        if round_ == 0:
            # click tokens are weak links: those touching two identified personas are kept out
            (wp,) = map_exchange(graph.weak_with_personas, [(w, a) for w, a in zip(weak, p_anchor)], [["node"]], P)
            w_audit, w_ids = map_exchange(_t_weak_decide, [(w, s) for w, s in zip(wp, linked)], [None], P,
                                          scalar_outputs=1)
            audits += w_audit
            extra += w_ids
            continue
        counts = ray.get(p_counts)
        n_hubs = sum(c["hubs"] for c in counts)
        if n_hubs == 0 or round_ == last:
            break
        log.info("size cap: %d hub identifiers removed from oversized components (round %d)", n_hubs, round_)
        audits += [size_audit_t.remote(h, ident.max_persona_identifiers) for h in p_hubs]
        extra += p_hub_ids
    (ep,) = map_exchange(event_personas, [(e, a) for e, a in zip(event_map, p_anchor)], [["partner_id", "event_id"]], P)
    figures = {
        "personas": sum(c["personas"] for c in counts),
        "cc_rounds": rounds_info,
        "size_cap_hubs_left": n_hubs if round_ == last else 0,
        "hash_collisions": int(merged["hash_collisions"].sum()),
        "thresholds": thresholds.learned,
    }
    return IdentityRefs(p_personas, p_map, audits, ep, figures)


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _rss_mb() -> float:
    import psutil

    return round(psutil.Process().memory_info().rss / 2**20, 1)


def _publish(refs: list, table: str, schema: pa.Schema, layout: io.RunLayout, config: JobConfig,
             rows: int | None = None) -> dict:
    import ray
    import ray.data

    if rows is None:
        rows = sum(ray.get([_remote(_t_rows).remote(r) for r in refs])) if refs else 0
    if rows == 0:
        return io.write_arrow(schema.empty_table(), layout.table(table), config.storage)
    return io.write_dataset(ray.data.from_arrow_refs(refs), layout.table(table), config.storage)


def resolve_distributed(plan: contract.InputPlan, config: JobConfig, layout: io.RunLayout) -> dict[str, Any]:
    import ray

    from jobs.raykit.shuffle import map_exchange

    P = config.ray.num_partitions
    started = time.perf_counter()
    bl_e, bl_p = blocklists(config.identity)
    ds = contract.read_events(plan, config.storage)
    (parts, rows) = map_exchange(lambda t: (t, t.num_rows), [(b,) for b in ds.to_arrow_refs()],
                                 [["partner_id", "event_id"]], P, scalar_outputs=1)
    rows_in = sum(ray.get(rows))
    stages = {"read": time.perf_counter() - started}
    rss = {"read": _rss_mb()}
    kept, slim, bad, counts = map_exchange(_t_input, [(p, bl_e, bl_p) for p in parts],
                                           [None, ["partner_id", "_skey"], None], P, scalar_outputs=1)
    del parts
    counts = ray.get(counts)
    rows_kept = sum(c["kept"] for c in counts)
    reasons: dict[str, int] = {}
    for c in counts:
        for k, v in c["reasons"].items():
            reasons[k] = reasons.get(k, 0) + v
    rows_quarantined = sum(reasons.values())
    if rows_kept + rows_quarantined != rows_in:
        raise AssertionError(f"rows in {rows_in} != kept {rows_kept} + quarantined {rows_quarantined}")
    to_q = _remote(contract.to_quarantine)
    q_refs = [to_q.remote(b, plan.extra_columns) for b in bad]
    q_marker = _publish(q_refs, "quarantine", contract.quarantine_schema(plan.extra_columns), layout, config,
                        rows=rows_quarantined)
    read_seconds = time.perf_counter() - started
    stages["validate+quarantine"] = read_seconds - stages["read"]
    share = rows_quarantined / rows_in if rows_in else 0.0
    log.info("read %d rows: %d valid, %d quarantined (%.3f%%)", rows_in, rows_kept, rows_quarantined, 100 * share)
    if rows_in == 0:
        raise UserError(f"input {config.events} holds no rows.")
    if share > config.input.max_quarantine_share:
        raise UserError(
            f"{rows_quarantined} of {rows_in} input rows ({share:.2%}) broke the input contract, more than "
            f"input.max_quarantine_share={config.input.max_quarantine_share:.2%} ({_reasons_text(reasons)}); "
            f"the rows and their reasons are in {layout.table('quarantine')}.")
    rss["validate"] = _rss_mb()
    ident = resolve_identity(slim, config, P)
    rss["identity"] = _rss_mb()
    mark = time.perf_counter()
    resolved, attach_counts = map_exchange(_t_attach, [(k, e) for k, e in zip(kept, ident.event_personas)], [None],
                                           P, scalar_outputs=1)
    attach_counts = ray.get(attach_counts)
    rows_resolved = sum(c["rows"] for c in attach_counts)
    stages["identity+attach"] = mark - started - read_seconds + (time.perf_counter() - mark)
    mark = time.perf_counter()
    markers = {"quarantine": q_marker}
    markers["events_resolved"] = _publish(resolved, "events_resolved", pa.schema([]), layout, config, rows=rows_resolved)
    markers["identity_map"] = _publish(ident.identity_map, "identity_map", personas.IDENTITY_MAP_SCHEMA, layout, config)
    markers["identity_audit"] = _publish(ident.audit, "identity_audit", junk.AUDIT_SCHEMA, layout, config)
    markers["personas"] = _publish(ident.personas, "personas", personas.PERSONA_SCHEMA, layout, config,
                                   rows=ident.figures["personas"])
    if markers["events_resolved"]["rows"] + rows_quarantined != rows_in:
        raise AssertionError(f"rows in {rows_in} != resolved {rows_resolved} + quarantined {rows_quarantined}")
    audit_rules = _audit_rules(layout, config)
    stages["write"] = time.perf_counter() - mark
    rss["write"] = _rss_mb()
    return {
        "rows_in": rows_in, "rows_resolved": rows_resolved, "rows_quarantined": rows_quarantined,
        "quarantined_by_reason": dict(sorted(reasons.items())), "quarantined_share": round(share, 6),
        "rows_with_persona": sum(c["with_persona"] for c in attach_counts), "personas": markers["personas"]["rows"],
        "identifiers_linked": markers["identity_map"]["rows"], "identifiers_audited": markers["identity_audit"]["rows"],
        "audited_by_rule": audit_rules, "files": len(plan.files), "partitions": P,
        "read_seconds": round(read_seconds, 2), **{k: v for k, v in ident.figures.items()},
        "tables": {k: layout.table(k) for k in markers}, "driver_peak_rss_mb": _peak_rss_mb(),
        "stage_seconds": {k: round(v, 2) for k, v in stages.items()}, "driver_rss_mb_after": rss,
    }


def _audit_rules(layout: io.RunLayout, config: JobConfig) -> dict[str, int]:
    audit = io.read_arrow(layout.table("identity_audit"), config.storage, columns=["rule"])
    return contract.reason_counts(audit.rename_columns(["reason"])) if audit.num_rows else {}


def _reasons_text(reasons: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1]))


def run_resolve(config: JobConfig, run_dir: str) -> dict[str, Any]:
    """The `segments resolve` stage: checks the input, then resolves on Ray; returns the summary."""
    from jobs.raykit.session import ray_session

    started = time.perf_counter()
    layout = io.RunLayout(run_dir)
    plan = contract.plan_input(config.events or "", config.storage)
    io.check_bucket(run_dir, config.storage)
    with ray_session(config.ray):
        summary = resolve_distributed(plan, config, layout)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    log.info("resolve: %d rows in, %d resolved, %d quarantined, %d personas, %d identifiers audited in %.1fs",
             summary["rows_in"], summary["rows_resolved"], summary["rows_quarantined"], summary["personas"],
             summary["identifiers_audited"], summary["seconds"])
    return summary
