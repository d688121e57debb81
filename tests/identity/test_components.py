"""Distributed connected components against networkx on random graphs (as in Splink's
tests/test_cc_random_graphs.py), over several partitions."""

import networkx as nx
import numpy as np
import pyarrow as pa
import pytest

from jobs.identity.components import connected_components_local, large_star, local_contract, small_star
from jobs.identity.distributed import connected_components_distributed


def random_edges(seed: int, n: int, m: int) -> tuple[pa.Table, list[tuple[int, int]]]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 2**63, size=n, dtype=np.uint64) * np.uint64(2)  # 64-bit ids like node hashes
    a, b = ids[rng.integers(0, n, m)], ids[rng.integers(0, n, m)]
    return pa.table({"src": pa.array(a, pa.uint64()), "dst": pa.array(b, pa.uint64())}), list(
        zip(a.tolist(), b.tolist())
    )


def networkx_labels(pairs):
    g = nx.Graph()
    g.add_edges_from((a, b) for a, b in pairs if a != b)
    return {node: min(comp) for comp in nx.connected_components(g) for node in comp}


def as_dict(labels: pa.Table) -> dict:
    return dict(zip(labels.column("node").to_pylist(), labels.column("label").to_pylist()))


@pytest.mark.parametrize(
    "seed, n, m, partitions",
    [
        (0, 50, 30, 3),
        (7, 60, 50, 1),
        (1, 500, 400, 4),
        (2, 2000, 1500, 5),
        (3, 300, 1200, 2),
        (4, 1000, 990, 7),
        (5, 10, 0, 3),
        (6, 3000, 2990, 8),
    ],
)
def test_distributed_components_match_networkx(ray_cluster, seed, n, m, partitions):
    edges, pairs = random_edges(seed, n, m)
    blocks = [ray_cluster.put(edges.slice(i, 97)) for i in range(0, max(m, 1), 97)]
    refs, info = connected_components_distributed(blocks, partitions)
    parts = ray_cluster.get(refs)
    assert len(parts) == partitions
    got = as_dict(pa.concat_tables(parts))
    assert got == networkx_labels(pairs)
    assert as_dict(connected_components_local(edges)) == got
    assert info["rounds"] >= 1
    # each node's label lives in exactly one partition
    seen = [set(p.column("node").to_pylist()) for p in parts]
    assert sum(len(s) for s in seen) == len(got)


@pytest.mark.parametrize("seed, n, m, partitions", [(1, 500, 400, 4), (6, 3000, 2990, 8), (3, 300, 1200, 1)])
def test_one_task_components_match_the_rounds_partition_by_partition(ray_cluster, seed, n, m, partitions):
    edges, pairs = random_edges(seed, n, m)
    blocks = [ray_cluster.put(edges.slice(i, 97)) for i in range(0, max(m, 1), 97)]
    in_rounds, rounds = connected_components_distributed(blocks, partitions)
    directed = 2 * sum(a != b for a, b in pairs)  # both directions, self loops dropped
    in_one_task, one_pass = connected_components_distributed(blocks, partitions, one_task_edges=directed)
    assert one_pass == {"rounds": 0} and rounds["rounds"] >= 1
    for a, b in zip(ray_cluster.get(in_rounds), ray_cluster.get(in_one_task), strict=True):
        assert as_dict(a) == as_dict(b)  # the same nodes in the same partitions, with the same labels
    assert as_dict(pa.concat_tables(ray_cluster.get(in_one_task))) == networkx_labels(pairs)
    # one edge over the bound: the rounds
    _, over = connected_components_distributed(blocks, partitions, one_task_edges=directed - 1)
    assert over["rounds"] >= 1


def test_long_path_converges(ray_cluster):
    ids = np.arange(1, 401, dtype=np.uint64)[::-1] * np.uint64(7919)
    edges = pa.table({"src": pa.array(ids[:-1]), "dst": pa.array(ids[1:])})
    refs, info = connected_components_distributed([ray_cluster.put(edges)], 4)
    labels = as_dict(pa.concat_tables(ray_cluster.get(refs)))
    assert set(labels.values()) == {int(ids.min())} and len(labels) == 400


def _uv(pairs):
    u, v = zip(*pairs)
    return pa.table({"u": pa.array(u, pa.uint64()), "v": pa.array(v, pa.uint64())})


def test_star_steps_on_a_small_graph():
    # path 1-2-3 in both directions
    both = _uv([(1, 2), (2, 1), (2, 3), (3, 2)])
    edges, labels, unstable = large_star(both)
    assert unstable == 1  # node 2 has a smaller and a larger neighbour
    assert sorted(zip(edges.column("u").to_pylist(), edges.column("v").to_pylist())) == [(2, 1), (3, 1)]
    out = small_star(_uv([(3, 1), (2, 1)]))
    pairs = set(zip(out.column("u").to_pylist(), out.column("v").to_pylist()))
    assert pairs == {(2, 1), (1, 2), (3, 1), (1, 3)}
    _, labels, unstable = large_star(out)
    assert unstable == 0 and dict(zip(labels.column("node").to_pylist(), labels.column("label").to_pylist())) == {
        1: 1,
        2: 1,
        3: 1,
    }
    contracted = local_contract(both)
    assert set(zip(contracted.column("u").to_pylist(), contracted.column("v").to_pylist())) == {
        (2, 1),
        (3, 1),
        (1, 2),
        (1, 3),
    }
