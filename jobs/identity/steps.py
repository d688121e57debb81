"""The steps of identity resolution, each a pure function of one partition.

`jobs.identity.rounds` strings them together; each step's docstring says how its inputs are partitioned
(in one process every step sees whole tables, which is one partition of everything). Steps that take the
ids of removed identifiers take them as trailing arguments, one array per partition that found them.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs.arrays import member, whole
from jobs.contract.rows import dedupe, reason_counts
from jobs.contract.schema import INTERNAL_COLUMNS, canonical_schema
from jobs.identity import graph, junk, personas

EVENT_PERSONA_SCHEMA = pa.schema(
    [
        ("partner_id", pa.string()),
        ("event_id", pa.string()),
        ("persona_id", pa.string()),
        ("session_key", pa.string()),
    ]
)


def _ids(parts: tuple) -> np.ndarray:
    """One array of the node ids handed over in several parts."""
    return np.concatenate([np.asarray(p, dtype=np.uint64) for p in parts]) if parts else np.zeros(0, np.uint64)


def num_rows(table: pa.Table) -> int:
    return table.num_rows


def validate_partition(
    part: pa.Table, blocklist_emails: list[str], blocklist_phones: list[str]
) -> tuple[pa.Table, pa.Table, pa.Table, dict]:
    """One (partner_id, event_id) partition of canonical rows -> (kept rows, slim identity rows with
    `_skey`, quarantined rows, {"kept": rows kept, "reasons": quarantined rows per reason})."""
    kept, bad = dedupe(part)
    slim = graph.session_partition_key(graph.slim_events(kept, blocklist_emails, blocklist_phones))
    return kept, slim, bad, {"kept": kept.num_rows, "reasons": reason_counts(bad)}


def slim_with_truth(
    block: pa.Table, blocklist_emails: list[str], blocklist_phones: list[str], truth_column: str
) -> pa.Table:
    """Resolved events -> slim identity rows with `_skey` that carry the ground truth (the oracle's input)."""
    slim = graph.slim_events(block, blocklist_emails, blocklist_phones, truth_column=truth_column)
    return graph.session_partition_key(slim)


def session_step(slim: pa.Table, gap_minutes: int, keep_truth: bool = False) -> tuple[pa.Table, pa.Table, pa.Table]:
    """One (partner_id, `_skey`) partition -> (sessionised rows with ids, occurrences, co-occurrence pairs)."""
    sess = graph.with_ids(graph.sessionise(slim, gap_minutes))
    occ = graph.occurrences(sess, graph.anchor_ids(sess), keep_truth=keep_truth)
    return sess, occ, graph.cooccurrence_pairs(occ)


def stats_step(occ: pa.Table, pairs: pa.Table, with_truth: bool = False) -> tuple[pa.Table, dict]:
    """One node partition of occurrences and pairs -> (node stats, histograms of the junk rules' figures)."""
    stats = junk.node_stats(occ, pairs, with_truth=with_truth)
    return stats, junk.histograms(stats)


def junk_step(
    stats: pa.Table, thresholds: junk.Thresholds, oracle: bool = False
) -> tuple[pa.Table, pa.Table, np.ndarray]:
    """One node partition of stats -> (audit rows, stats of the identifiers that link, junk ids)."""
    audit, junk_ids = junk.decide_junk(stats, thresholds, oracle=oracle)
    keep = pc.invert(pc.is_in(stats.column("node"), pa.array(junk_ids, pa.uint64())))
    return audit, stats.filter(keep), junk_ids


def edges_step(sess: pa.Table, *removed: np.ndarray) -> tuple[pa.Table, pa.Table, pa.Table]:
    """One session partition -> (strong edges, weak edges, event map) without the removed identifiers."""
    return graph.linking_edges(sess, _ids(removed))


def drop_removed_targets(edges: pa.Table, *removed: np.ndarray) -> pa.Table:
    """Edges whose identifier end (`dst`) was not removed."""
    return edges.filter(pa.array(~member(edges.column("dst").to_numpy(), _ids(removed))))


def labels_as_edges(labels: pa.Table) -> pa.Table:
    """Component labels as star edges (node -> label): they connect exactly what the labelled edges did."""
    return pa.table({"src": labels.column("node"), "dst": labels.column("label")})


def join_labels(stats: pa.Table, labels: pa.Table, *removed: np.ndarray) -> tuple[pa.Table, pa.Table]:
    """Co-partitioned by node: (identifier rows with their label, anchor rows (node, label)).

    Identifiers removed later (weak links, size cap) are dropped here; a node in `labels` but not in `stats`
    is an anchor.
    """
    if removed:
        stats = stats.filter(pc.invert(pc.is_in(stats.column("node"), pa.array(_ids(removed), pa.uint64()))))
    lab_nodes = labels.column("node").to_numpy()
    lab_values = labels.column("label").to_numpy()
    nodes = stats.column("node").to_numpy()
    order = np.argsort(lab_nodes, kind="stable")
    pos = np.minimum(np.searchsorted(lab_nodes[order], nodes), max(len(order) - 1, 0))
    hit = (lab_nodes[order][pos] == nodes) if len(order) else np.zeros(len(nodes), bool)
    idents = stats.filter(pa.array(hit))
    idents = idents.append_column("label", pa.array(lab_values[order][pos[hit]], pa.uint64()))
    idents = idents.select(personas.IDENT_COLUMNS)
    anchors = labels.filter(pa.array(~member(lab_nodes, nodes)))
    return idents, anchors


def personas_step(
    idents: pa.Table, anchors: pa.Table, max_identifiers: int
) -> tuple[pa.Table, pa.Table, pa.Table, pa.Table, np.ndarray, dict]:
    """One label partition -> (personas, identity_map, anchor -> persona, size-cap hubs, hub ids, counts)."""
    out = personas.build_personas(idents, anchors, max_identifiers)
    hubs = out["hubs"]
    counts = {"personas": out["personas"].num_rows, "identifiers": out["identity_map"].num_rows, "hubs": hubs.num_rows}
    return (
        out["personas"],
        out["identity_map"],
        out["anchor_persona"],
        hubs,
        hubs.column("node").to_numpy().astype(np.uint64),
        counts,
    )


def weak_link_step(weak_with_persona: pa.Table, stats: pa.Table) -> tuple[pa.Table, np.ndarray]:
    """One token-node partition -> (audit rows, ids) of the click tokens that would merge identified people."""
    return junk.weak_link_decisions(weak_with_persona, stats)


def size_cap_audit(hubs: pa.Table, cap: int) -> pa.Table:
    """Audit rows (`size_cap`) of the hubs removed from components above the size cap."""
    return pa.table(
        {
            "identifier_type": hubs.column("identifier_type"),
            "identifier": hubs.column("identifier"),
            "partner_id": hubs.column("partner_id"),
            "rule": pa.array(["size_cap"] * hubs.num_rows, pa.string()),
            "figure": hubs.column("figure"),
            "threshold": pa.array([float(cap)] * hubs.num_rows),
            "n_events": hubs.column("n_events"),
        },
        schema=junk.AUDIT_SCHEMA,
    )


def event_personas(event_map: pa.Table, anchor_persona: pa.Table) -> pa.Table:
    """Co-partitioned by anchor: (partner_id, event_id, persona_id, session_key), in the event map's order
    (each anchor has one persona: a sorted lookup, not a hash join)."""
    keys = anchor_persona.column("anchor").to_numpy()
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    if (sorted_keys[1:] == sorted_keys[:-1]).any():
        raise ValueError("an anchor with two personas")
    anchors = event_map.column("anchor").to_numpy()
    pos = np.minimum(np.searchsorted(sorted_keys, anchors), max(len(keys) - 1, 0))
    hit = sorted_keys[pos] == anchors if len(keys) else np.zeros(len(anchors), bool)
    persona = whole(anchor_persona.column("persona_id"))
    persona = persona.take(pa.array(order[pos], mask=~hit)) if len(keys) else pa.nulls(len(anchors), pa.string())
    columns = [event_map.column("partner_id"), event_map.column("event_id"), persona, event_map.column("session_key")]
    return pa.table(columns, names=EVENT_PERSONA_SCHEMA.names).cast(EVENT_PERSONA_SCHEMA)


def attach(kept: pa.Table, event_persona: pa.Table) -> pa.Table:
    """Co-partitioned by (partner_id, event_id): the events_resolved rows (internal columns dropped)."""
    base = kept.drop_columns([c for c in INTERNAL_COLUMNS if c in kept.column_names])
    if base.num_rows == 0:
        return base.append_column("persona_id", pa.array([], pa.string())).append_column(
            "session_key", pa.array([], pa.string())
        )
    if event_persona.num_rows == base.num_rows and all(
        base.column(k).equals(event_persona.column(k)) for k in ("partner_id", "event_id")
    ):  # row for row already (one process: both come from the same rows in the same order)
        return base.append_column("persona_id", event_persona.column("persona_id")).append_column(
            "session_key", event_persona.column("session_key")
        )
    joined = base.join(event_persona, ["partner_id", "event_id"], join_type="left outer", use_threads=False)
    return joined.select(base.column_names + ["persona_id", "session_key"])


def attach_step(kept: pa.Table, event_persona: pa.Table) -> tuple[pa.Table, dict]:
    """`attach`, and its rows and rows with a persona."""
    resolved = attach(kept, event_persona)
    with_persona = int(pc.sum(pc.is_valid(resolved.column("persona_id"))).as_py() or 0)
    return resolved, {"rows": resolved.num_rows, "with_persona": with_persona}


def resolved_schema(extra_columns: list[str]) -> pa.Schema:
    """The schema of events_resolved for input with these extra columns."""
    return attach(canonical_schema(extra_columns).empty_table(), EVENT_PERSONA_SCHEMA.empty_table()).schema
