"""tree_reduce: a tree of Ray tasks gives what one merge of every partial gives."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from jobs.raykit.reduce import tree_reduce
from jobs.run.plan import FACTS_SCHEMA, merge_facts  # a merge the pipeline uses (the plan's event facts)


def _sorted(table: pa.Table) -> list[dict]:
    return table.sort_by([("day", "ascending"), ("category", "ascending")]).to_pylist()


@pytest.mark.parametrize("fan_in", [2, 3, 16])
def test_the_tree_gives_the_one_merge(ray_cluster, fan_in):
    day = dt.date(2026, 6, 1)
    partials = [
        pa.table(
            {"day": [day + dt.timedelta(days=i % 4), day], "category": [f"c{i % 7}", None], "events": [i, 0]},
            schema=FACTS_SCHEMA,
        )
        for i in range(23)
    ]
    refs = [ray_cluster.put(p) for p in partials]
    assert _sorted(tree_reduce(refs, merge_facts, fan_in=fan_in)) == _sorted(merge_facts(*partials))


def test_no_partial_is_the_empty_merge_and_fan_in_is_checked(ray_cluster):
    assert tree_reduce([], merge_facts).num_rows == 0
    with pytest.raises(ValueError, match="fan_in"):
        tree_reduce([ray_cluster.put(FACTS_SCHEMA.empty_table())], merge_facts, fan_in=1)
