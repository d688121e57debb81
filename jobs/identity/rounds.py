"""Identity resolution as one sequence of partition steps, run in this process or on Ray.

The steps (`jobs.identity.steps`) are strung together once, here, over an `Executor`: `LocalExecutor` runs
them in this process on whole tables (one partition; scipy's connected components: the benchmark baseline
and the tests' cross-check), `jobs.identity.distributed.RayExecutor` runs them as Ray tasks over hash
partitions (large-star / small-star components). The same code gives the same personas either way.

    canonical rows -(partner_id, event_id)-> dedupe, quarantine, slim identity rows   (`check_rows`)
    slim rows -(partner_id, session or device)-> sessions, anchors, occurrences, co-occurrence pairs
    occurrences + pairs -(node)-> node stats + histograms -> [driver: thresholds] -> junk + audit
    sessions + junk ids -> linking edges, event->anchor map -> connected components -(node)-> labels
    labels + node stats -(label)-> personas, identity_map, anchor->persona (+ size-cap hubs: repeat)
    event map + anchor->persona -(anchor)-> event->persona                             (`resolve_identity`)
    kept rows + event->persona -(partner_id, event_id)-> events_resolved               (`attach_personas`)

The rounds: click tokens are weak links. A first components pass runs without them; tokens that touch two
identified personas are audited (`forwarded_click`), and the second pass adds the other tokens' edges to the
first pass's stars. Then, while a component holds more identifiers than the size cap, its hubs are audited
(`size_cap`) and removed, and the components are found again (at most `size_cap_rounds` times). The ids of
removed identifiers (a small set: junk, not edges) are handed to the steps as arguments.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa

from jobs.config import IdentityConfig
from jobs.contract.rows import merge_counts
from jobs.identity import graph, junk, steps
from jobs.identity.components import connected_components_local

log = logging.getLogger(__name__)

Keys = Sequence[str] | None


class Executor(Protocol):
    """Where the partition steps run.

    `map(fn, calls, keys, scalar_outputs)` runs `fn(*call)` for every call. `fn` returns one table per entry of
    `keys`, then `scalar_outputs` small values; the result holds one list per output: for keys, that output
    re-partitioned by them; for None, one value per call; for a small value, one per call. Values may be
    handles (Ray object refs): `get` turns a list of them into Python objects, and `components` labels
    the connected components of a list of edge tables (`src`, `dst`) as node partitions of (node, label).
    """

    def map(
        self, fn: Callable, calls: Sequence[tuple], keys: Sequence[Keys], scalar_outputs: int = 0
    ) -> list[list]: ...

    def get(self, values: list) -> list: ...

    def components(self, edges: list) -> tuple[list, dict[str, Any]]: ...


class LocalExecutor:
    """This process, whole tables: every output is one partition; scipy labels the components in one pass."""

    def map(self, fn: Callable, calls: Sequence[tuple], keys: Sequence[Keys], scalar_outputs: int = 0) -> list[list]:
        kinds = [*keys, *([None] * scalar_outputs)]
        results = [fn(*call) for call in calls]
        if len(kinds) == 1:
            results = [(r,) for r in results]
        outputs = []
        for i, kind in enumerate(kinds):
            values = [r[i] for r in results]
            if kind is not None and len(values) > 1:
                values = [pa.concat_tables(values, promote_options="permissive")]
            outputs.append(values)
        return outputs

    def get(self, values: list) -> list:
        return list(values)

    def components(self, edges: list) -> tuple[list, dict[str, Any]]:
        return [connected_components_local(pa.concat_tables(edges))], {"rounds": 1}


@dataclass
class CheckedRows:
    """The input after the row rules, as partitions (or handles of them)."""

    kept: list  # valid rows, by (partner_id, event_id)
    slim: list  # slim identity rows, by (partner_id, _skey)
    quarantined: list  # rows that break the contract (canonical shape, `_reason` set)
    rows_kept: int
    reasons: dict[str, int]  # quarantined rows per reason


def check_rows(ex: Executor, parts: list, blocklists: tuple[list[str], list[str]]) -> CheckedRows:
    """Canonical rows partitioned by (partner_id, event_id) -> the rows kept, quarantined, and for identity."""
    kept, slim, bad, counts = ex.map(
        steps.validate_partition,
        [(p, *blocklists) for p in parts],
        [None, ["partner_id", "_skey"], None],
        scalar_outputs=1,
    )
    counts = ex.get(counts)
    return CheckedRows(kept, slim, bad, sum(c["kept"] for c in counts), merge_counts(c["reasons"] for c in counts))


@dataclass
class Identity:
    """The identity outputs as partitions (or handles of them), and the figures of the run summary."""

    personas: list
    identity_map: list
    audit: list
    event_personas: list  # by (partner_id, event_id)
    figures: dict[str, Any]


@dataclass
class _Pass:
    """What one components pass found: its labels (by node) and the outputs of `steps.personas_step`."""

    labels: list
    personas: list
    identity_map: list
    anchor_persona: list  # by anchor
    hubs: list
    hub_ids: list
    counts: list


def _components_pass(ex: Executor, edges: list, linked: list, removed: list, cap: int) -> tuple[_Pass, int]:
    """Connected components of the edges -> personas, the removed identifiers left out; and the CC rounds."""
    labels, info = ex.components(edges)
    idents, anchors = ex.map(
        steps.join_labels, [(s, lab, *removed) for s, lab in zip(linked, labels)], [["label"], ["label"]]
    )
    outputs = ex.map(
        steps.personas_step,
        [(i, a, cap) for i, a in zip(idents, anchors)],
        [None, None, ["anchor"], None],
        scalar_outputs=2,
    )
    return _Pass(labels, *outputs), info["rounds"]


def resolve_identity(
    ex: Executor, slim_parts: list, config: IdentityConfig, truth: bool = False, oracle: bool = False
) -> Identity:
    """Slim identity rows partitioned by (partner_id, `_skey`) -> personas, identity_map, audit and
    event -> persona. `oracle`: the ground truth (`_truth`, kept when `truth`) replaces the junk rules."""
    cap = config.max_persona_identifiers
    sess, occ, pairs = ex.map(
        steps.session_step, [(p, config.session_gap_minutes, truth) for p in slim_parts], [None, ["node"], ["node"]]
    )
    stats, hists = ex.map(steps.stats_step, [(o, q, truth) for o, q in zip(occ, pairs)], [None], scalar_outputs=1)
    merged = junk.merge_histograms(ex.get(hists))
    thresholds = junk.learn_thresholds(merged, config)
    audits, linked, junk_ids = ex.map(
        steps.junk_step, [(s, thresholds, oracle) for s in stats], [None, None], scalar_outputs=1
    )
    del stats, occ, pairs
    removed: list = []  # ids of identifiers the rounds removed (forwarded click tokens, size-cap hubs)
    cc_rounds = []

    # without click tokens: which tokens would merge two identified personas
    strong, weak, event_map = ex.map(steps.edges_step, [(s, *junk_ids) for s in sess], [None, ["src"], ["anchor"]])
    found, rounds = _components_pass(ex, strong, linked, removed, cap)
    cc_rounds.append(rounds)
    (weak_personas,) = ex.map(
        graph.weak_with_personas, [(w, a) for w, a in zip(weak, found.anchor_persona)], [["node"]]
    )
    weak_audit, weak_ids = ex.map(
        steps.weak_link_step, [(w, s) for w, s in zip(weak_personas, linked)], [None], scalar_outputs=1
    )
    audits += weak_audit
    removed += weak_ids

    # with the other tokens, warm-started: the first pass's stars (node -> label) connect exactly what the
    # strong edges do, so only the kept weak edges are added to them
    (stars,) = ex.map(steps.labels_as_edges, [(lab,) for lab in found.labels], [None])
    (kept_weak,) = ex.map(steps.drop_removed_targets, [(w, *removed) for w in weak], [None])
    found, rounds = _components_pass(ex, stars + kept_weak, linked, removed, cap)
    cc_rounds.append(rounds)

    # size cap: the hubs of oversized components are audited and removed, and the components found again
    for round_ in range(1, config.size_cap_rounds + 1):
        hubs = sum(c["hubs"] for c in ex.get(found.counts))
        if hubs == 0:
            break
        log.info("size cap: %d hub identifiers removed from oversized components (round %d)", hubs, round_)
        (cap_audit,) = ex.map(steps.size_cap_audit, [(h, cap) for h in found.hubs], [None])
        audits += cap_audit
        removed += found.hub_ids
        strong, weak, event_map = ex.map(
            steps.edges_step, [(s, *junk_ids, *removed) for s in sess], [None, ["src"], ["anchor"]]
        )
        found, rounds = _components_pass(ex, strong + weak, linked, removed, cap)
        cc_rounds.append(rounds)

    (event_personas,) = ex.map(
        steps.event_personas, [(e, a) for e, a in zip(event_map, found.anchor_persona)], [["partner_id", "event_id"]]
    )
    counts = ex.get(found.counts)
    figures = {
        "personas": sum(c["personas"] for c in counts),
        "identifiers_linked": sum(c["identifiers"] for c in counts),
        "cc_rounds": cc_rounds,
        "size_cap_hubs_left": sum(c["hubs"] for c in counts),
        "hash_collisions": int(merged["hash_collisions"].sum()),
        "thresholds": thresholds.learned,
    }
    return Identity(found.personas, found.identity_map, audits, event_personas, figures)


@dataclass
class Resolved:
    """events_resolved as partitions (or handles of them), its rows and rows with a persona."""

    parts: list
    rows: int
    rows_with_persona: int


def attach_personas(ex: Executor, kept: list, event_personas: list) -> Resolved:
    """Kept rows and event -> persona, both by (partner_id, event_id) -> the events_resolved rows."""
    parts, counts = ex.map(steps.attach_step, [(k, e) for k, e in zip(kept, event_personas)], [None], scalar_outputs=1)
    counts = ex.get(counts)
    return Resolved(parts, sum(c["rows"] for c in counts), sum(c["with_persona"] for c in counts))


def count_rows(ex: Executor, parts: list) -> int:
    (rows,) = ex.map(steps.num_rows, [(p,) for p in parts], [None])
    return sum(ex.get(rows))


def resolve_local(events: pa.Table, config: IdentityConfig) -> dict[str, Any]:
    """The whole resolution in this process: `events` are canonical rows (`jobs.contract.read_events_local`).
    Returns the output tables (quarantine in the canonical shape) and the identity figures."""
    ex = LocalExecutor()
    rows = check_rows(ex, [events], junk.blocklists(config))
    identity = resolve_identity(ex, rows.slim, config)
    resolved = attach_personas(ex, rows.kept, identity.event_personas)
    return {
        "events_resolved": resolved.parts[0],
        "quarantine": rows.quarantined[0],
        "identity_map": identity.identity_map[0],
        "personas": identity.personas[0],
        "identity_audit": pa.concat_tables(identity.audit),
        "figures": identity.figures,
    }
