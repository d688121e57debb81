"""Personas from connected components: stable ids, current email/phone, per-persona counts.

Stable ids: a persona is named after the *earliest-seen identifier* of its component (ties: identifier type
rank, then node hash): `persona_id` = 16 hex digits of that identifier's 64-bit node hash. The same input
gives the same ids; adding later events cannot change a component's earliest identifier unless the
component merges with another (then the older of the two names survives) or splits. A min-hash label would
change whenever a new identifier with a smaller hash joined, so the label is never used as the id.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs.arrays import member, whole
from jobs.identity.graph import (
    CLICK,
    CUSTOMER,
    DEVICE,
    EMAIL,
    PHONE,
    SUBSCRIBER,
    TYPE_RANK,
    dictionary_codes,
    distinct_pairs,
)

TS = pa.timestamp("us", tz="UTC")
PERSONA_SCHEMA = pa.schema(
    [
        ("persona_id", pa.string()),
        ("current_email", pa.string()),
        ("current_phone", pa.string()),
        ("n_devices", pa.int64()),
        ("n_emails", pa.int64()),
        ("n_phones", pa.int64()),
        ("n_customers", pa.int64()),
        ("n_subscribers", pa.int64()),
        ("n_click_tokens", pa.int64()),
        ("partners", pa.list_(pa.string())),
        ("first_seen", TS),
        ("last_seen", TS),
    ]
)
IDENTITY_MAP_SCHEMA = pa.schema(
    [
        ("identifier_type", pa.string()),
        ("identifier", pa.string()),
        ("partner_id", pa.string()),
        ("persona_id", pa.string()),
        ("first_seen", TS),
        ("last_seen", TS),
        ("n_events", pa.int64()),
        ("seen_at_partners", pa.list_(pa.string())),
    ]
)
ANCHOR_PERSONA_SCHEMA = pa.schema([("anchor", pa.uint64()), ("persona_id", pa.string()), ("identified", pa.bool_())])
HUB_SCHEMA = pa.schema(
    [
        ("node", pa.uint64()),
        ("identifier_type", pa.string()),
        ("identifier", pa.string()),
        ("partner_id", pa.string()),
        ("figure", pa.float64()),
        ("n_events", pa.int64()),
    ]
)
IDENT_COLUMNS = [
    "node",
    "label",
    "identifier_type",
    "identifier",
    "partner_id",
    "first_seen",
    "last_seen",
    "n_events",
    "seen_at_partners",
    "n_anchors",
]


def persona_hex(nodes: np.ndarray) -> pa.Array:
    """16 lowercase hex digits per uint64, vectorised."""
    if len(nodes) == 0:
        return pa.array([], pa.string())
    text = nodes.astype(">u8").tobytes().hex().encode()
    return pa.array(np.frombuffer(text, dtype="S16"), pa.binary()).cast(pa.string())


def _first_per_group(group: np.ndarray, *sort_keys: np.ndarray) -> np.ndarray:
    """Index of the first row of each group under the given ordering (lexsort: last key is primary)."""
    order = np.lexsort(tuple(reversed(sort_keys)) + (group,)) if sort_keys else np.argsort(group, kind="stable")
    g = group[order]
    first = np.r_[True, g[1:] != g[:-1]]
    return order[first]


def _partners_union(seen_at_partners: pa.ListArray, group: np.ndarray, n_groups: int) -> pa.ListArray:
    """Per group, the sorted distinct partners of its rows' `seen_at_partners` lists (null where a group
    has none): the partner names are ranked once, the (group, rank) pairs made distinct, no per-row Python."""
    flat = pc.list_flatten(seen_at_partners)
    parent = pc.list_parent_indices(seen_at_partners).to_numpy()
    codes, names = dictionary_codes(flat)
    valid = codes >= 0
    order_of_name = np.argsort(np.asarray(names.to_pylist(), dtype=object), kind="stable")
    rank = np.empty(len(order_of_name), np.int64)
    rank[order_of_name] = np.arange(len(order_of_name))
    g, r, _ = distinct_pairs(group[parent[valid]].astype(np.int64), rank[codes[valid]])
    counts = np.bincount(g, minlength=n_groups)
    offsets = pa.array(np.r_[0, np.cumsum(counts)].astype(np.int32))
    values = names.take(pa.array(order_of_name[r]))
    return pa.ListArray.from_arrays(offsets, values, type=pa.list_(pa.string()), mask=pa.array(counts == 0))


def build_personas(idents: pa.Table, anchors: pa.Table, max_identifiers: int) -> dict[str, pa.Table]:
    """For one partition of labels (all rows of a label in this partition).

    idents: IDENT_COLUMNS (identifiers that link, with their component label);
    anchors: (node, label) for anchor nodes.
    Returns personas, identity_map, anchor_persona (anchor -> persona_id) and hubs (identifiers of
    components above the size cap that glue it together: the candidates the size-cap rule removes).
    """
    if idents.num_rows == 0:
        empty_anchor = pa.table(
            {
                "anchor": anchors.column("node"),
                "persona_id": pa.nulls(anchors.num_rows, pa.string()),
                "identified": pa.array(np.zeros(anchors.num_rows, bool)),
            },
            schema=ANCHOR_PERSONA_SCHEMA,
        )
        return {
            "personas": PERSONA_SCHEMA.empty_table(),
            "identity_map": IDENTITY_MAP_SCHEMA.empty_table(),
            "anchor_persona": empty_anchor,
            "hubs": HUB_SCHEMA.empty_table(),
        }
    label = idents.column("label").to_numpy()
    node = idents.column("node").to_numpy()
    first_seen = idents.column("first_seen").cast(pa.int64()).to_numpy()
    last_seen = idents.column("last_seen").cast(pa.int64()).to_numpy()
    types = idents.column("identifier_type").to_numpy(zero_copy_only=False).astype(object)
    type_codes, type_names = dictionary_codes(idents.column("identifier_type"))
    rank = np.array([TYPE_RANK[t] for t in type_names.to_pylist()], np.int64)[type_codes]
    # persona id per label: earliest-seen identifier
    first = _first_per_group(label, first_seen, rank, node)
    labels_sorted = label[first]
    pid_by_label = persona_hex(node[first])
    pos = np.searchsorted(labels_sorted, label)
    persona_of_row = pid_by_label.take(pa.array(pos))
    identity_map = pa.table(
        {
            "identifier_type": idents.column("identifier_type"),
            "identifier": idents.column("identifier"),
            "partner_id": idents.column("partner_id"),
            "persona_id": persona_of_row,
            "first_seen": idents.column("first_seen"),
            "last_seen": idents.column("last_seen"),
            "n_events": idents.column("n_events"),
            "seen_at_partners": idents.column("seen_at_partners"),
        },
        schema=IDENTITY_MAP_SCHEMA,
    )
    # counts per label and type
    n_labels = len(labels_sorted)
    counts = {}
    for name, t in (
        ("n_devices", DEVICE),
        ("n_emails", EMAIL),
        ("n_phones", PHONE),
        ("n_customers", CUSTOMER),
        ("n_subscribers", SUBSCRIBER),
        ("n_click_tokens", CLICK),
    ):
        counts[name] = np.bincount(pos[types == t], minlength=n_labels).astype(np.int64)
    fs = np.full(n_labels, np.iinfo(np.int64).max)
    np.minimum.at(fs, pos, first_seen)
    ls = np.full(n_labels, np.iinfo(np.int64).min)
    np.maximum.at(ls, pos, last_seen)
    current = {}
    ident_col = idents.column("identifier")
    for name, t in (("current_email", EMAIL), ("current_phone", PHONE)):
        rows = np.flatnonzero(types == t)
        values = np.full(n_labels, None, dtype=object)
        if len(rows):
            # latest used: max last_seen, then most events, then the identifier text
            best = _first_per_group(
                pos[rows], -last_seen[rows], -idents.column("n_events").to_numpy()[rows], node[rows]
            )
            values[pos[rows][best]] = ident_col.take(pa.array(rows[best])).to_numpy(zero_copy_only=False)
        current[name] = pa.array(values, pa.string())
    partners = _partners_union(whole(idents.column("seen_at_partners")), pos, n_labels)
    personas = (
        pa.table(
            {
                "persona_id": pid_by_label,
                **{k: current[k] for k in ("current_email", "current_phone")},
                **{k: pa.array(v) for k, v in counts.items()},
                "partners": partners,
                "first_seen": pa.array(fs, pa.int64()).cast(TS),
                "last_seen": pa.array(ls, pa.int64()).cast(TS),
            }
        )
        .select(PERSONA_SCHEMA.names)
        .cast(PERSONA_SCHEMA)
    )
    # anchors -> persona (null where the component holds no identifier)
    a_label = anchors.column("label").to_numpy()
    a_pos = np.searchsorted(labels_sorted, a_label)
    a_pos_c = np.minimum(a_pos, max(n_labels - 1, 0))
    found = (a_pos < n_labels) & (labels_sorted[a_pos_c] == a_label)
    a_pid = pid_by_label.take(pa.array(a_pos_c))
    a_pid = pc.if_else(pa.array(found), a_pid, pa.scalar(None, pa.string()))
    identified = (counts["n_emails"] + counts["n_phones"] + counts["n_customers"] + counts["n_subscribers"]) > 0
    a_ident = found & identified[a_pos_c] if n_labels else np.zeros(len(a_label), bool)
    anchor_persona = pa.table(
        {"anchor": anchors.column("node"), "persona_id": a_pid, "identified": pa.array(a_ident)},
        schema=ANCHOR_PERSONA_SCHEMA,
    )
    # size cap: identifiers other than click tokens
    people_ids = sum(counts[k] for k in ("n_devices", "n_emails", "n_phones", "n_customers", "n_subscribers"))
    big = np.flatnonzero(people_ids > max_identifiers)
    hubs = HUB_SCHEMA.empty_table()
    if len(big):
        n_anchors = idents.column("n_anchors").to_numpy()
        rows = np.flatnonzero(member(pos, big) & (types != CLICK))
        chosen = []
        for g in big:
            r = rows[pos[rows] == g]
            deg = n_anchors[r]
            cut = max(np.quantile(deg, 0.99), 2)
            pick = r[deg >= cut] if (deg >= cut).any() else r[[np.argmax(deg)]]
            chosen.append(pick)
        pick = np.concatenate(chosen)
        sub = idents.take(pa.array(pick))
        hubs = pa.table(
            {
                "node": sub.column("node"),
                "identifier_type": sub.column("identifier_type"),
                "identifier": sub.column("identifier"),
                "partner_id": sub.column("partner_id"),
                "figure": pa.array(people_ids[pos[pick]].astype(float)),
                "n_events": sub.column("n_events"),
            },
            schema=HUB_SCHEMA,
        )
    return {"personas": personas, "identity_map": identity_map, "anchor_persona": anchor_persona, "hubs": hubs}
