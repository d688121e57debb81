"""`segments resolve`: events -> quarantine, events_resolved, identity_map, identity_audit, personas.

The work is a chain of pure functions over Arrow tables (jobs.contract, jobs.identity.*). The distributed
path runs each on hash partitions as Ray tasks (`jobs.shuffle`), with connected components as
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
from jobs.identity.normalise import normalised_email_blocklist, phone_blocklist_digits

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
    return kept, bad, slim, {"kept": kept.num_rows, "reasons": contract.reason_counts(bad)}


def _t_slim_truth(block, bl_e, bl_p, truth_column):
    slim = graph.slim_events(block, bl_e, bl_p, truth_column=truth_column)
    return graph.session_partition_key(slim)


def _t_stats(occ, pairs, with_truth):
    return stats_step(occ, pairs, with_truth)


def _t_junk(stats, thresholds, oracle):
    return junk_step(stats, thresholds, oracle)


def _t_edges(sess, *junk_parts):
    ids = np.concatenate([np.asarray(j, dtype=np.uint64) for j in junk_parts]) if junk_parts else np.zeros(0, np.uint64)
    return graph.linking_edges(sess.drop_columns(["_skey"]) if "_skey" in sess.column_names else sess, ids)


def _t_join(stats, labels, *extra):
    ids = np.concatenate([np.asarray(j, dtype=np.uint64) for j in extra]) if extra else None
    return join_labels(stats, labels, ids)


def _t_personas(idents, anchors, cap):
    out = personas.build_personas(idents, anchors, cap)
    hubs = out["hubs"]
    return (out["personas"], out["identity_map"], out["anchor_persona"], hubs,
            {"personas": out["personas"].num_rows, "hubs": hubs.num_rows,
             "null_anchors": int(pc.sum(pc.is_null(out["anchor_persona"].column("persona_id"))).as_py() or 0)})


def _t_hub_ids(hubs):
    return hubs.column("node").to_numpy().astype(np.uint64)


def _t_size_audit(hubs, cap):
    return with_size_cap_audit(hubs, cap)


def _t_attach(kept, ep):
    return attach(kept, ep)


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


def resolve_identity(slim_blocks: list, config: JobConfig, num_partitions: int, truth: bool = False,
                     oracle: bool = False) -> IdentityRefs:
    """Slim identity rows (with `_skey`) -> personas, identity_map, audit and event->persona refs."""
    import ray

    from jobs.shuffle import hash_partition

    ident, P = config.identity, num_partitions
    session_t = _remote(session_step, 3)
    stats_t, junk_t = _remote(_t_stats, 2), _remote(_t_junk, 3)
    edges_t, join_t = _remote(_t_edges, 3), _remote(_t_join, 2)
    personas_t = _remote(_t_personas, 5)
    ep_t, hub_ids_t, size_audit_t = _remote(event_personas), _remote(_t_hub_ids), _remote(_t_size_audit)

    parts = hash_partition(slim_blocks, ["partner_id", "_skey"], P)
    sess_out = [session_t.remote(p, ident.session_gap_minutes, truth) for p in parts]
    sess = [s[0] for s in sess_out]
    occ = hash_partition([s[1] for s in sess_out], ["node"], P)
    pairs = hash_partition([s[2] for s in sess_out], ["node"], P)
    stats_out = [stats_t.remote(o, q, truth) for o, q in zip(occ, pairs)]
    hists = ray.get([s[1] for s in stats_out])
    merged = junk.merge_histograms(hists)
    thresholds = junk.learn_thresholds(merged, ident)
    junk_out = [junk_t.remote(s[0], thresholds, oracle) for s in stats_out]
    audits = [j[0] for j in junk_out]
    junk_ids = [j[1] for j in junk_out]
    linked = [j[2] for j in junk_out]
    extra: list = []
    rounds_info = []
    last = ident.size_cap_rounds + 1
    weak_t, weak_decide_t = _remote(graph.weak_with_personas), _remote(junk.weak_link_decisions, 2)
    for round_ in range(last + 1):
        edge_out = [edges_t.remote(s, *junk_ids, *extra) for s in sess]
        strong = [e[0] for e in edge_out]
        weak = [e[1] for e in edge_out]
        event_map = [e[2] for e in edge_out]
        labels, info = components.connected_components(strong if round_ == 0 else strong + weak, P)
        rounds_info.append(info["rounds"])
        join_out = [join_t.remote(s, lab, *extra) for s, lab in zip(linked, labels)]
        idents = hash_partition([j[0] for j in join_out], ["label"], P)
        anchors = hash_partition([j[1] for j in join_out], ["label"], P)
        p_out = [personas_t.remote(i, a, ident.max_persona_identifiers) for i, a in zip(idents, anchors)]
        if round_ == 0:
            # click tokens are weak links: those touching two identified personas are kept out
            ap = hash_partition([p[2] for p in p_out], ["anchor"], P)
            wk = hash_partition(weak, ["src"], P)
            wp = hash_partition([weak_t.remote(w, a) for w, a in zip(wk, ap)], ["node"], P)
            decided = [weak_decide_t.remote(w, s) for w, s in zip(wp, linked)]
            audits += [d[0] for d in decided]
            extra += [d[1] for d in decided]
            continue
        counts = ray.get([p[4] for p in p_out])
        n_hubs = sum(c["hubs"] for c in counts)
        if n_hubs == 0 or round_ == last:
            break
        log.info("size cap: %d hub identifiers removed from oversized components (round %d)", n_hubs, round_)
        audits += [size_audit_t.remote(p[3], ident.max_persona_identifiers) for p in p_out]
        extra += [hub_ids_t.remote(p[3]) for p in p_out]
    anchor_persona = hash_partition([p[2] for p in p_out], ["anchor"], P)
    em = hash_partition(event_map, ["anchor"], P)
    ep = hash_partition([ep_t.remote(e, a) for e, a in zip(em, anchor_persona)], ["partner_id", "event_id"], P)
    figures = {
        "personas": sum(c["personas"] for c in counts),
        "cc_rounds": rounds_info,
        "size_cap_hubs_left": n_hubs if round_ == last else 0,
        "hash_collisions": int(merged["hash_collisions"].sum()),
        "thresholds": thresholds.learned,
    }
    return IdentityRefs([p[0] for p in p_out], [p[1] for p in p_out], audits, ep, figures)


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _publish(refs: list, table: str, schema: pa.Schema, layout: io.RunLayout, config: JobConfig) -> dict:
    import ray.data

    rows = sum(__import__("ray").get([_remote(_t_rows).remote(r) for r in refs])) if refs else 0
    if rows == 0:
        return io.write_arrow(schema.empty_table(), layout.table(table), config.storage)
    return io.write_dataset(ray.data.from_arrow_refs(refs), layout.table(table), config.storage)


def resolve_distributed(plan: contract.InputPlan, config: JobConfig, layout: io.RunLayout) -> dict[str, Any]:
    import ray

    from jobs.shuffle import hash_partition

    P = config.ray.num_partitions
    started = time.perf_counter()
    bl_e, bl_p = blocklists(config.identity)
    ds = contract.read_events(plan, config.storage)
    blocks = ds.to_arrow_refs()
    rows_in = sum(ray.get([_remote(_t_rows).remote(b) for b in blocks]))
    parts = hash_partition(blocks, ["partner_id", "event_id"], P)
    del blocks
    input_t = _remote(_t_input, 4)
    in_out = [input_t.remote(p, bl_e, bl_p) for p in parts]
    del parts
    counts = ray.get([o[3] for o in in_out])
    kept = [o[0] for o in in_out]
    rows_kept = sum(c["kept"] for c in counts)
    reasons: dict[str, int] = {}
    for c in counts:
        for k, v in c["reasons"].items():
            reasons[k] = reasons.get(k, 0) + v
    rows_quarantined = sum(reasons.values())
    if rows_kept + rows_quarantined != rows_in:
        raise AssertionError(f"rows in {rows_in} != kept {rows_kept} + quarantined {rows_quarantined}")
    to_q = _remote(contract.to_quarantine)
    q_refs = [to_q.remote(o[1], plan.extra_columns) for o in in_out]
    q_marker = _publish(q_refs, "quarantine", contract.quarantine_schema(plan.extra_columns), layout, config)
    read_seconds = time.perf_counter() - started
    share = rows_quarantined / rows_in if rows_in else 0.0
    log.info("read %d rows: %d valid, %d quarantined (%.3f%%)", rows_in, rows_kept, rows_quarantined, 100 * share)
    if rows_in == 0:
        raise UserError(f"input {config.events} holds no rows.")
    if share > config.input.max_quarantine_share:
        raise UserError(
            f"{rows_quarantined} of {rows_in} input rows ({share:.2%}) broke the input contract, more than "
            f"input.max_quarantine_share={config.input.max_quarantine_share:.2%} ({_reasons_text(reasons)}); "
            f"the rows and their reasons are in {layout.table('quarantine')}.")
    ident = resolve_identity([o[2] for o in in_out], config, P)
    attach_t = _remote(_t_attach)
    resolved = [attach_t.remote(k, e) for k, e in zip(kept, ident.event_personas)]
    markers = {"quarantine": q_marker}
    markers["events_resolved"] = _publish(resolved, "events_resolved", pa.schema([]), layout, config)
    markers["identity_map"] = _publish(ident.identity_map, "identity_map", personas.IDENTITY_MAP_SCHEMA, layout, config)
    markers["identity_audit"] = _publish(ident.audit, "identity_audit", junk.AUDIT_SCHEMA, layout, config)
    markers["personas"] = _publish(ident.personas, "personas", personas.PERSONA_SCHEMA, layout, config)
    rows_resolved = markers["events_resolved"]["rows"]
    if rows_resolved + rows_quarantined != rows_in:
        raise AssertionError(f"rows in {rows_in} != resolved {rows_resolved} + quarantined {rows_quarantined}")
    audit_rules = _audit_rules(layout, config)
    attributed = _attributed(resolved)
    return {
        "rows_in": rows_in, "rows_resolved": rows_resolved, "rows_quarantined": rows_quarantined,
        "quarantined_by_reason": dict(sorted(reasons.items())), "quarantined_share": round(share, 6),
        "rows_with_persona": attributed, "personas": markers["personas"]["rows"],
        "identifiers_linked": markers["identity_map"]["rows"], "identifiers_audited": markers["identity_audit"]["rows"],
        "audited_by_rule": audit_rules, "files": len(plan.files), "partitions": P,
        "read_seconds": round(read_seconds, 2), **{k: v for k, v in ident.figures.items()},
        "tables": {k: layout.table(k) for k in markers}, "driver_peak_rss_mb": _peak_rss_mb(),
    }


def _attributed(resolved_refs: list) -> int:
    import ray

    count = _remote(lambda t: int(pc.sum(pc.is_valid(t.column("persona_id"))).as_py() or 0))
    return sum(ray.get([count.remote(r) for r in resolved_refs]))


def _audit_rules(layout: io.RunLayout, config: JobConfig) -> dict[str, int]:
    audit = io.read_arrow(layout.table("identity_audit"), config.storage, columns=["rule"])
    return contract.reason_counts(audit.rename_columns(["reason"])) if audit.num_rows else {}


def _reasons_text(reasons: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1]))


def run_resolve(config: JobConfig, run_dir: str) -> dict[str, Any]:
    """The `segments resolve` stage: checks the input, then resolves on Ray; returns the summary."""
    from jobs.raysession import ray_session

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
