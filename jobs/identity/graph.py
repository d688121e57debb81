"""The identifier graph: slim identity rows, sessions, anchors, occurrences, co-occurrence pairs, edges.

Every event belongs to one *anchor*: its session (the partner's `session_id`, or the cut session of
partner + device at `session_gap_minutes` of inactivity), or the event itself when it has neither. Every
identifier that co-occurs in one anchor links: the graph is bipartite, anchors on one side, identifiers on
the other, and a persona is a connected component that holds at least one identifier. On a device found to
be shared the session stops being evidence, so its events fall back to one anchor each (an anonymous event
there then links to nobody and gets persona_id null).

Node ids are 64-bit hashes (`jobs.raykit.shuffle.hash_columns`) of (kind, scope partner, value). A collision would
merge two identifiers; for n identifiers its probability is about n^2 / 2^65 (3e-8 for a million
identifiers, 3e-4 for a hundred million). It is not left silent: the node aggregation groups by the hash
and counts the distinct (type, identifier, partner) behind each one, and the run summary reports
`hash_collisions` (expected 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from jobs.arrays import distinct, member, spread, whole
from jobs.contract.normalise import normalise_emails, normalise_phones, phone_digits
from jobs.raykit.shuffle import string_hashes

DEVICE, EMAIL, PHONE, CUSTOMER, SUBSCRIBER, CLICK = "device", "email", "phone", "customer", "subscriber", "click_token"
IDENTIFIER_TYPES = (DEVICE, EMAIL, PHONE, CUSTOMER, SUBSCRIBER, CLICK)
SCOPED = (CUSTOMER, SUBSCRIBER, CLICK)
TYPE_RANK = {t: i for i, t in enumerate((EMAIL, PHONE, CUSTOMER, SUBSCRIBER, DEVICE, CLICK))}
_SOURCE_COLUMN = {
    DEVICE: "device_id",
    EMAIL: "email_n",
    PHONE: "phone_n",
    CUSTOMER: "customer_id",
    SUBSCRIBER: "subscriber_id",
    CLICK: "click_token",
}
_FLAG_COLUMN = {EMAIL: "email_flag", PHONE: "phone_flag"}
TRUTH = "_truth"

SLIM_SCHEMA = pa.schema(
    [
        ("partner_id", pa.string()),
        ("event_id", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("session_id", pa.string()),
        ("device_id", pa.string()),
        ("customer_id", pa.string()),
        ("subscriber_id", pa.string()),
        ("click_token", pa.string()),
        ("email_n", pa.string()),
        ("email_flag", pa.string()),
        ("phone_n", pa.string()),
        ("phone_flag", pa.string()),
    ]
)

OCC_SCHEMA = pa.schema(
    [
        ("anchor", pa.uint64()),
        ("node", pa.uint64()),
        ("identifier_type", pa.string()),
        ("identifier", pa.string()),
        ("scope", pa.string()),
        ("partner_id", pa.string()),
        ("flag", pa.string()),
        ("first_seen", pa.timestamp("us", tz="UTC")),
        ("last_seen", pa.timestamp("us", tz="UTC")),
        ("n_events", pa.int64()),
    ]
)
PAIR_SCHEMA = pa.schema(
    [("node", pa.uint64()), ("other", pa.uint64()), ("other_type", pa.string()), ("other_scope", pa.string())]
)


def _clean(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Trimmed, blank as null (the column is copied once more only where it holds a blank)."""
    col = whole(column)
    col = pc.utf8_trim_whitespace(pc.cast(col, pa.string()))
    blank = pc.equal(col, "")
    return pc.if_else(blank, pa.scalar(None, pa.string()), col) if pc.any(blank).as_py() else col


def slim_events(
    events: pa.Table, blocklist_emails: list[str], blocklist_phones: list[str], truth_column: str | None = None
) -> pa.Table:
    """Only what identity needs, identifiers normalised and flagged (`invalid_*` / `blocklist`)."""
    email_n, email_ok = normalise_emails(events.column("email"))
    phone_n, phone_ok = normalise_phones(events.column("phone"), events.column("country"))
    email_flag = pc.if_else(
        pc.is_in(email_n, pa.array(blocklist_emails, pa.string())),
        pa.scalar("blocklist"),
        pc.if_else(email_ok, pa.scalar(None, pa.string()), pa.scalar("invalid_email")),
    )
    email_flag = pc.if_else(pc.is_null(email_n), pa.scalar(None, pa.string()), email_flag)
    digits = phone_digits(events.column("phone"))
    e164_digits = pc.replace_substring_regex(phone_n, r"\D+", "")
    blocked_phone = pc.or_(
        pc.fill_null(pc.is_in(digits, pa.array(blocklist_phones, pa.string())), False),
        pc.fill_null(_national_digits_blocked(phone_n, e164_digits, blocklist_phones), False),
    )
    phone_flag = pc.if_else(
        blocked_phone,
        pa.scalar("blocklist"),
        pc.if_else(phone_ok, pa.scalar(None, pa.string()), pa.scalar("invalid_phone")),
    )
    phone_flag = pc.if_else(pc.is_null(phone_n), pa.scalar(None, pa.string()), phone_flag)
    arrays = [
        whole(events.column("partner_id")),
        whole(events.column("event_id")),
        whole(events.column("ts")),
        _clean(events.column("session_id")),
        _clean(events.column("device_id")),
        _clean(events.column("customer_id")),
        _clean(events.column("subscriber_id")),
        _clean(events.column("click_token")),
        email_n,
        email_flag,
        phone_n,
        phone_flag,
    ]
    out = pa.table(arrays, schema=SLIM_SCHEMA)
    if truth_column:
        out = out.append_column(TRUTH, pc.cast(events.column(truth_column), pa.string()))
    return out


def _national_digits_blocked(phone_n: pa.Array, e164_digits: pa.Array, blocklist: list[str]) -> pa.Array:
    """A blocklisted national number written in any format (+CC 000..., 00CC 000...) is blocked too."""
    if not blocklist:
        return pa.array([False] * len(phone_n))
    pattern = "(" + "|".join(b.lstrip("0") or "0" for b in blocklist) + ")$"
    long_enough = pc.greater_equal(pc.utf8_length(e164_digits), 8)
    return pc.and_(long_enough, pc.match_substring_regex(e164_digits, "^[0-9]{1,3}0*" + pattern))


def session_partition_key(slim: pa.Table) -> pa.Table:
    """Adds `_skey`: rows of one session (and of one partner + device without session_id) share it."""
    sid = slim.column("session_id")
    dev = slim.column("device_id")
    key = pc.if_else(
        pc.is_valid(sid),
        pc.binary_join_element_wise(pa.scalar("s:"), sid, ""),
        pc.if_else(
            pc.is_valid(dev),
            pc.binary_join_element_wise(pa.scalar("d:"), dev, ""),
            pc.binary_join_element_wise(pa.scalar("e:"), slim.column("event_id"), ""),
        ),
    )
    return slim.append_column("_skey", key)


def sessionise(slim: pa.Table, gap_minutes: int) -> pa.Table:
    """Adds `session_key`: the partner's session_id, else partner + device cut at `gap_minutes`, else null.

    Needs every row of a partner + device (without session_id) in this table (the `_skey` partitioning).
    """
    n = slim.num_rows
    sid = whole(slim.column("session_id"))
    has_sid = pc.is_valid(sid).to_numpy(zero_copy_only=False)
    dev = whole(slim.column("device_id"))
    cut = ~has_sid & pc.is_valid(dev).to_numpy(zero_copy_only=False)
    idx = np.flatnonzero(cut)
    cut_keys = pa.array([], pa.string())
    if len(idx):
        sub = slim.select(["partner_id", "device_id", "ts"]).take(pa.array(idx))
        group = pc.binary_join_element_wise(sub.column("partner_id"), sub.column("device_id"), "\x1f")
        gid = pc.dictionary_encode(whole(group)).indices.to_numpy(zero_copy_only=False)
        ts = whole(sub.column("ts")).cast(pa.int64()).to_numpy(zero_copy_only=False)
        order = np.lexsort((ts, gid))
        g, t = gid[order], ts[order]
        gap = np.int64(gap_minutes) * 60_000_000
        new = np.ones(len(order), dtype=bool)
        new[1:] = (g[1:] != g[:-1]) | ((t[1:] - t[:-1]) > gap)
        start = np.empty(len(order), np.int64)
        start[order] = t[np.flatnonzero(new)][np.cumsum(new) - 1]  # back in the rows' order
        cut_keys = pc.binary_join_element_wise(whole(sub.column("device_id")), pa.array(start).cast(pa.string()), "@")
    device_keys = spread(cut_keys, idx, n)
    key = pc.if_else(pa.array(has_sid), sid, device_keys)
    return slim.append_column("session_key", key)


_HASH_KEY = "segments-ids-v01"


def hash_strings(*columns: pa.Array | pa.ChunkedArray | str) -> np.ndarray:
    """A 64-bit id per row of the given string columns (null is its own value); a `str` stands for a column
    holding that value on every row. Per column only the distinct values are hashed (dictionary encoding);
    columns are combined numerically."""
    rows = {len(c) for c in columns if not isinstance(c, str)}
    n = rows.pop() if rows else 0
    combined = None
    for c in columns:
        hashed = _value_hashes(pa.array([c], pa.string()))[0] if isinstance(c, str) else _value_hashes(c)
        combined = (
            np.broadcast_to(hashed, n).copy()
            if combined is None
            else pd.util.hash_array(combined * np.uint64(1_000_003) ^ hashed, hash_key=_HASH_KEY)
        )
    return combined if combined is not None else np.zeros(0, np.uint64)


_NULL_HASH = np.uint64(0x9E3779B97F4A7C15)


def _value_hashes(c: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The hash of every value of one string column (null: `_NULL_HASH`)."""
    c = whole(c)
    if c.null_count == len(c):
        return np.full(len(c), _NULL_HASH, dtype=np.uint64)
    hashed = string_hashes(pc.cast(c, pa.string()), _HASH_KEY)
    if c.null_count:
        hashed[pc.is_null(c).to_numpy(zero_copy_only=False)] = _NULL_HASH
    return hashed


def with_ids(sess: pa.Table) -> pa.Table:
    """Adds the node id of every identifier column and the session anchor id once, so the later rounds
    never hash those strings again (event anchors, needed by few rows, are hashed where needed)."""
    n = sess.num_rows
    partner = whole(sess.column("partner_id"))
    out = sess
    for t in IDENTIFIER_TYPES:
        col = whole(sess.column(_SOURCE_COLUMN[t]))
        scope = partner if t in SCOPED else pa.nulls(n, pa.string())
        ids = node_ids(t, scope, col)
        out = out.append_column(f"_n_{t}", pa.array(ids, pa.uint64()))
    session_anchor = hash_strings("s", partner, whole(sess.column("session_key")))
    return out.append_column("_a_session", pa.array(session_anchor, pa.uint64()))


def anchor_ids(sess: pa.Table, per_event: np.ndarray | None = None) -> np.ndarray:
    """Anchor node per row of sessionised rows with ids (`with_ids`): the partner's session, or the event
    where there is no session (or `per_event` is True for the row: a session on a shared device)."""
    use_event = pc.is_null(sess.column("session_key")).to_numpy(zero_copy_only=False)
    if per_event is not None:
        use_event = use_event | per_event
    anchors = sess.column("_a_session").to_numpy().copy()
    rows = np.flatnonzero(use_event)
    if len(rows):
        picked = pa.array(rows)
        anchors[rows] = hash_strings("e", sess.column("partner_id").take(picked), sess.column("event_id").take(picked))
    return anchors


def node_ids(identifier_type: pa.Array | str, scope: pa.Array, identifier: pa.Array) -> np.ndarray:
    return hash_strings(identifier_type, scope, identifier)


def sorted_runs(*keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, starts): rows sorted by the keys (last key primary), equal keys in row order (a stable sort),
    and where each run of equal keys starts. Several keys sort with Arrow's stable multi-key sort, the same
    order as numpy's lexsort in 0.6-0.7x its time from 1M rows up (8.5M rows, two uint64 keys: 1.86 s
    against 2.62 s); one key with numpy, the faster there."""
    if len(keys) > 1:
        names = [f"k{i}" for i in range(len(keys))]
        table = pa.table([pa.array(np.ascontiguousarray(k)) for k in reversed(keys)], names=names)
        order = pc.sort_indices(table, sort_keys=[(name, "ascending") for name in names]).to_numpy()
    else:
        order = np.lexsort(keys)
    change = np.zeros(len(order), dtype=bool)
    if len(order):
        change[0] = True
        for k in keys:
            sk = k[order]
            change[1:] |= sk[1:] != sk[:-1]
    return order, np.flatnonzero(change)


def distinct_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct (a, b) pairs sorted by a then b, and how often each occurs: what
    `np.unique(np.stack([a, b], axis=1), axis=0, return_counts=True)` gives, without its slow row sort."""
    order, starts = sorted_runs(b, a)
    first = order[starts]
    counts = np.diff(np.r_[starts, len(order)]).astype(np.int64)
    return a[first], b[first], counts


def dictionary_codes(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """Dictionary codes (null -> -1) and the dictionary of a string column."""
    c = whole(column)
    enc = pc.dictionary_encode(c)
    return pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64), enc.dictionary


@dataclass
class _Occurrences:
    """The (anchor, identifier) groups of sessionised rows with ids, as numbers: every (row, identifier) of
    the rows, type by type in `IDENTIFIER_TYPES` order and in row order within a type (`kind`: the type's
    index, `row`, `node`, `anchor`, `flag`: the row's flag as a code of `flags`, -1 for none), and the
    stable sort that groups them (`order`, `starts`: by anchor, then node, then `_truth` for the oracle)."""

    kind: np.ndarray
    row: np.ndarray
    node: np.ndarray
    anchor: np.ndarray
    flag: np.ndarray
    flags: pa.Array
    order: np.ndarray
    starts: np.ndarray

    @classmethod
    def group(cls, slim: pa.Table, anchors: np.ndarray, truth: pa.Array | None = None) -> _Occurrences:
        rows = [
            np.flatnonzero(slim.column(_SOURCE_COLUMN[t]).is_valid().to_numpy(zero_copy_only=False))
            for t in IDENTIFIER_TYPES
        ]
        kind = np.concatenate([np.full(len(r), i, np.int8) for i, r in enumerate(rows)])
        row = np.concatenate(rows)
        node = np.concatenate([slim.column(f"_n_{t}").to_numpy()[r] for t, r in zip(IDENTIFIER_TYPES, rows)])
        anchor = anchors[row]
        flag, flags = _flag_codes(slim, kind, row)
        keys = [node, anchor] if truth is None else [dictionary_codes(truth.take(pa.array(row)))[0], node, anchor]
        order, starts = sorted_runs(*keys)
        return cls(kind, row, node, anchor, flag, flags, order, starts)

    def first(self) -> np.ndarray:
        """The position (in the rows) of each group's first row."""
        return self.order[self.starts]

    def flag_max(self) -> np.ndarray:
        """Per group, the highest flag code of its rows (-1: none flagged)."""
        return np.maximum.reduceat(self.flag[self.order], self.starts) if len(self.starts) else np.zeros(0, np.int64)


def _flag_codes(slim: pa.Table, kind: np.ndarray, row: np.ndarray) -> tuple[np.ndarray, pa.Array]:
    """The flag of every (row, identifier) as a dictionary code (-1: none), the dictionary in the order the
    flags first appear among them (emails before phones)."""
    flagged = [IDENTIFIER_TYPES.index(t) for t in _FLAG_COLUMN]
    at = np.flatnonzero(np.isin(kind, flagged))
    values = pa.concat_arrays(
        [whole(slim.column(_FLAG_COLUMN[t])).take(pa.array(row[kind == i])) for t, i in zip(_FLAG_COLUMN, flagged)]
    )
    codes, flags = dictionary_codes(values)
    flag = np.full(len(kind), -1, np.int64)
    flag[at] = codes
    return flag, flags


def occurrences(slim: pa.Table, anchors: np.ndarray, keep_truth: bool = False) -> pa.Table:
    """One row per (anchor, identifier) of sessionised rows with ids (`with_ids`): first/last seen, events,
    flag (`OCC_SCHEMA`, + `_truth` for the oracle). Identifiers whose value is flagged (blocklist, invalid)
    are kept here so they can be audited."""
    truth = whole(slim.column(TRUTH)) if keep_truth else None
    grouped = _Occurrences.group(slim, anchors, truth)
    first = grouped.first()
    kind, row, starts = grouped.kind[first], grouped.row[first], grouped.starts
    partner = whole(slim.column("partner_id"))
    scoped = np.isin(kind, [IDENTIFIER_TYPES.index(t) for t in SCOPED])
    flag_max = grouped.flag_max()
    flag = (
        grouped.flags.take(pa.array(flag_max, mask=flag_max < 0))
        if len(grouped.flags)
        else pa.nulls(len(starts), pa.string())
    )
    ts = whole(slim.column("ts")).cast(pa.int64()).to_numpy(zero_copy_only=False)[grouped.row[grouped.order]]
    ts_type = pa.timestamp("us", tz="UTC")
    empty = not len(starts)
    cols = {
        "anchor": pa.array(grouped.anchor[first], pa.uint64()),
        "node": pa.array(grouped.node[first], pa.uint64()),
        "identifier_type": pa.array(IDENTIFIER_TYPES, pa.string()).take(pa.array(kind)),
        "identifier": _identifiers(slim, kind, row),
        "scope": partner.take(pa.array(row, mask=~scoped)),
        "partner_id": partner.take(pa.array(row)),
        "flag": flag,
        "first_seen": pa.array(ts[:0] if empty else np.minimum.reduceat(ts, starts), pa.int64()).cast(ts_type),
        "last_seen": pa.array(ts[:0] if empty else np.maximum.reduceat(ts, starts), pa.int64()).cast(ts_type),
        "n_events": pa.array(np.diff(np.r_[starts, len(grouped.order)]).astype(np.int64)),
    }
    if truth is not None:
        cols[TRUTH] = truth.take(pa.array(row))
    schema = pa.schema(list(OCC_SCHEMA) + ([pa.field(TRUTH, pa.string())] if keep_truth else []))
    return pa.table(cols, schema=schema)


def _identifiers(slim: pa.Table, kind: np.ndarray, row: np.ndarray) -> pa.Array:
    """The identifier text of each (kind, row): taken type by type from its own column, then put in order.
    Only the text taken is copied, never the six columns concatenated."""
    at = [np.flatnonzero(kind == i) for i in range(len(IDENTIFIER_TYPES))]
    taken = pa.concat_arrays(
        [whole(slim.column(_SOURCE_COLUMN[t])).take(pa.array(row[a])) for t, a in zip(IDENTIFIER_TYPES, at)]
    )
    back = np.empty(len(kind), np.int64)
    back[np.concatenate(at)] = np.arange(len(kind))
    return taken.take(pa.array(back))


def cooccurrence_pairs(occ: pa.Table) -> pa.Table:
    """Distinct (identifier, other identifier) pairs that share an anchor, for the fan-out figures:
    email/phone/customer/subscriber/click token -> devices, and device -> emails/phones/customers."""
    clean = occ.filter(pc.is_null(occ.column("flag")))
    types = whole(clean.column("identifier_type")) if clean.num_rows else pa.array([], pa.string())
    is_dev = pc.equal(types, DEVICE)
    dev = clean.filter(is_dev)
    if dev.num_rows == 0:
        return PAIR_SCHEMA.empty_table()
    others = clean.filter(pc.is_in(types, pa.array([EMAIL, PHONE, CUSTOMER, SUBSCRIBER, CLICK])))
    d_anchor = dev.column("anchor").to_numpy()
    d_order = np.argsort(d_anchor, kind="stable")
    d_sorted = d_anchor[d_order]
    o_anchor = others.column("anchor").to_numpy()
    lo = np.searchsorted(d_sorted, o_anchor, side="left")
    hi = np.searchsorted(d_sorted, o_anchor, side="right")
    n = hi - lo
    o_idx = np.repeat(np.arange(len(o_anchor)), n)
    within = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    d_idx = d_order[np.repeat(lo, n) + within]
    o_node = others.column("node").to_numpy()[o_idx]
    d_node = dev.column("node").to_numpy()[d_idx]
    o_type = others.column("identifier_type").take(pa.array(o_idx))
    o_scope = others.column("scope").take(pa.array(o_idx))
    to_dev = pa.table(
        {
            "node": pa.array(o_node, pa.uint64()),
            "other": pa.array(d_node, pa.uint64()),
            "other_type": pa.repeat(pa.scalar(DEVICE), len(o_idx)),
            "other_scope": pa.nulls(len(o_idx), pa.string()),
        }
    )
    from_dev = pa.table(
        {
            "node": pa.array(d_node, pa.uint64()),
            "other": pa.array(o_node, pa.uint64()),
            "other_type": o_type,
            "other_scope": o_scope,
        }
    )
    pairs = pa.concat_tables([to_dev, from_dev]).cast(PAIR_SCHEMA)
    _, starts = sorted_runs(pairs.column("other").to_numpy(), pairs.column("node").to_numpy())
    order = np.lexsort((pairs.column("other").to_numpy(), pairs.column("node").to_numpy()))
    return pairs.take(pa.array(order[starts]))


def linking_edges(slim: pa.Table, junk_nodes: np.ndarray) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(strong edges, weak edges, event map) of sessionised rows with ids, without junk identifiers.

    Edges are anchor -> identifier (`src`, `dst`). Click tokens are *weak*: a token may attach anonymous
    activity to a person but must never merge two identified people (a forwarded campaign link), so their
    edges come separately and join the graph only after `weak_link_decisions`. The event map is
    partner_id/event_id/anchor/session_key. Sessions on a junk device fall back to one anchor per event.
    """
    junk = distinct(junk_nodes.astype(np.uint64))
    dev = whole(slim.column("device_id"))
    has_dev = pc.is_valid(dev).to_numpy(zero_copy_only=False)
    per_event = np.zeros(slim.num_rows, dtype=bool)
    if has_dev.any() and len(junk):
        idx = np.flatnonzero(has_dev)
        per_event[idx] = member(slim.column(f"_n_{DEVICE}").to_numpy()[idx], junk)
    anchors = anchor_ids(slim, per_event)
    event_map = pa.table(
        {
            "partner_id": slim.column("partner_id"),
            "event_id": slim.column("event_id"),
            "anchor": pa.array(anchors, pa.uint64()),
            "session_key": slim.column("session_key"),
        }
    )
    grouped = _Occurrences.group(slim, anchors)
    first = grouped.first()
    nodes, src = grouped.node[first], grouped.anchor[first]
    ok = grouped.flag_max() < 0
    if len(junk):
        ok &= ~member(nodes, junk)
    weak = grouped.kind[first] == IDENTIFIER_TYPES.index(CLICK)
    return _edges(src[ok & ~weak], nodes[ok & ~weak]), _edges(src[ok & weak], nodes[ok & weak]), event_map


def _edges(src: np.ndarray, dst: np.ndarray) -> pa.Table:
    return pa.table({"src": pa.array(src, pa.uint64()), "dst": pa.array(dst, pa.uint64())})


WEAK_SCHEMA = pa.schema([("node", pa.uint64()), ("persona_id", pa.string()), ("identified", pa.bool_())])


def weak_with_personas(weak_edges: pa.Table, anchor_persona: pa.Table) -> pa.Table:
    """Co-partitioned by anchor: (token node, persona of the anchor, whether that persona is identified)."""
    if weak_edges.num_rows == 0:
        return WEAK_SCHEMA.empty_table()
    a_keys = anchor_persona.column("anchor").to_numpy()
    order = np.argsort(a_keys, kind="stable")
    src = weak_edges.column("src").to_numpy()
    pos = np.minimum(np.searchsorted(a_keys[order], src), max(len(order) - 1, 0))
    hit = (a_keys[order][pos] == src) if len(order) else np.zeros(len(src), bool)
    rows = order[pos]
    pid = anchor_persona.column("persona_id").take(pa.array(rows)) if len(order) else pa.nulls(len(src), pa.string())
    ident = anchor_persona.column("identified").take(pa.array(rows)) if len(order) else pa.nulls(len(src), pa.bool_())
    out = pa.table({"node": weak_edges.column("dst"), "persona_id": pid, "identified": ident}, schema=WEAK_SCHEMA)
    return out.filter(pa.array(hit))
