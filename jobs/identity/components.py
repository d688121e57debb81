"""Connected components: the large-star / small-star steps over hash partitions, and a scipy reference.

Kiveris et al., "Connected Components in MapReduce and Beyond" (SoCC 2014). Edges live in hash partitions
(the rounds are driven by `jobs.identity.distributed.connected_components_distributed`); every step here is
a vectorised numpy function over one partition:

  0. local contraction: each partition replaces its edges by a star on the minimum node of each of its
     local components (scipy on the partition only), which keeps global connectivity and shortens paths;
  1. large-star (edges grouped by u, both directions): every larger neighbour v of u is re-attached to
     m(u) = min(u, N(u));
  2. small-star (edges grouped by their larger end u): u and its smaller neighbours attach to their min.

The large-star step also counts nodes that are not yet part of a star (a node with both a smaller and a
larger neighbour, or with two smaller ones); when the count is 0 the graph is a set of stars centred on
each component's minimum node and the labels (node, min node of its component) come out of the same step.
Only these counts reach the driver; no step sees more than one partition of the edges.

`connected_components_local` is the single-process reference (scipy.sparse.csgraph) with the same labels.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components as scipy_components

from jobs.identity.graph import distinct_pairs

LABEL_SCHEMA = pa.schema([("node", pa.uint64()), ("label", pa.uint64())])
_UV = pa.schema([("u", pa.uint64()), ("v", pa.uint64())])


def _uv(u: np.ndarray, v: np.ndarray) -> pa.Table:
    return pa.table([pa.array(u, pa.uint64()), pa.array(v, pa.uint64())], schema=_UV)


def _arrays(table: pa.Table, a: str, b: str) -> tuple[np.ndarray, np.ndarray]:
    return (
        table.column(a).to_numpy().astype(np.uint64, copy=False),
        table.column(b).to_numpy().astype(np.uint64, copy=False),
    )


def _unique_pairs(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    u, v, _ = distinct_pairs(u, v)
    return u, v


def both_directions(edges: pa.Table) -> pa.Table:
    """Undirected edges (`src`, `dst`) as (u, v) in both directions, self loops dropped."""
    u, v = _arrays(edges, "src", "dst")
    keep = u != v
    u, v = u[keep], v[keep]
    return _uv(np.concatenate([u, v]), np.concatenate([v, u]))


def _min_label_components(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nodes, label = min node of its component) with scipy, for the edges given."""
    nodes, inverse = np.unique(np.concatenate([u, v]), return_inverse=True)
    if len(nodes) == 0:
        return nodes, nodes
    iu, iv = inverse[: len(u)], inverse[len(u) :]
    graph = coo_matrix((np.ones(len(iu), dtype=np.int8), (iu, iv)), shape=(len(nodes), len(nodes))).tocsr()
    _, comp = scipy_components(graph, directed=False)
    # nodes are sorted, so the first node of each component in node order is its minimum
    first = np.full(comp.max() + 1, len(nodes), dtype=np.int64)
    np.minimum.at(first, comp, np.arange(len(nodes)))
    return nodes, nodes[first[comp]]


def local_contract(part: pa.Table) -> pa.Table:
    """Step 0: replace a partition's edges by stars on its local components' minimum nodes."""
    u, v = _arrays(part, "u", "v")
    nodes, label = _min_label_components(u, v)
    keep = nodes != label
    a, b = nodes[keep], label[keep]
    return _uv(np.concatenate([a, b]), np.concatenate([b, a]))


def large_star(part: pa.Table) -> tuple[pa.Table, pa.Table, int]:
    """(edges (key=larger end, val=smaller end) for small-star, labels, nodes not yet in a star)."""
    u, v = _arrays(part, "u", "v")
    u, v = _unique_pairs(u, v)  # sorted by u, then v
    if len(u) == 0:
        return _uv(u, v), LABEL_SCHEMA.empty_table(), 0
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    group = np.cumsum(np.r_[True, u[1:] != u[:-1]]) - 1
    heads = u[starts]
    m = np.minimum(heads, np.minimum.reduceat(v, starts))
    smaller = np.add.reduceat((v < u).astype(np.int64), starts)
    larger = np.add.reduceat((v > u).astype(np.int64), starts)
    unstable = int(((smaller >= 1) & (larger >= 1)).sum() + (smaller >= 2).sum())
    up = v > u
    out_key, out_val = v[up], m[group[up]]
    keep = out_key != out_val
    labels = pa.table([pa.array(heads, pa.uint64()), pa.array(m, pa.uint64())], schema=LABEL_SCHEMA)
    return _uv(out_key[keep], out_val[keep]), labels, unstable


def small_star(part: pa.Table) -> pa.Table:
    """Edges keyed by their larger end u with smaller values N: u and N attach to min(N); both directions."""
    u, v = _arrays(part, "u", "v")
    u, v = _unique_pairs(u, v)
    if len(u) == 0:
        return _uv(u, v)
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    group = np.cumsum(np.r_[True, u[1:] != u[:-1]]) - 1
    m = np.minimum.reduceat(v, starts)  # v < u always
    heads = u[starts]
    a = np.concatenate([v, heads])
    b = np.concatenate([m[group], m])
    keep = a != b
    a, b = a[keep], b[keep]
    return _uv(np.concatenate([a, b]), np.concatenate([b, a]))


def labels_of_directed(*parts: pa.Table) -> pa.Table:
    """(node, label) of the (u, v) edges of `parts` (both directions, no self loops) with scipy, in one pass."""
    pairs = [_arrays(part, "u", "v") for part in parts]
    nodes, label = _min_label_components(np.concatenate([u for u, _ in pairs]), np.concatenate([v for _, v in pairs]))
    return pa.table([pa.array(nodes, pa.uint64()), pa.array(label, pa.uint64())], schema=LABEL_SCHEMA)


def connected_components_local(edges: pa.Table) -> pa.Table:
    """Single-process reference: the same labels (min node of the component) with scipy, for (`src`, `dst`)."""
    u, v = _arrays(edges, "src", "dst")
    keep = u != v
    nodes, label = _min_label_components(u[keep], v[keep])
    return pa.table([pa.array(nodes, pa.uint64()), pa.array(label, pa.uint64())], schema=LABEL_SCHEMA)
