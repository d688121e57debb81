"""The reasons the score stage writes reach the online profiles: `segments publish` carries a `reasons` list per
segment when scores/ has the column (`jobs.serving.publish.build_partition`), members' labels, others null."""

from __future__ import annotations

import pyarrow as pa

from jobs.segments.membership import SCORES_SCHEMA
from jobs.serving.publish import build_partition, score_column


def test_profiles_carry_members_reasons():
    features = pa.table({"persona_id": ["a", "b"], "inputs": pa.array([[0.1], [0.2]], pa.list_(pa.float32()))})
    scores = pa.Table.from_pylist(
        [
            {
                "persona_id": "a",
                "segment": "s",
                "score": 0.9,
                "percentile": 95.0,
                "model_version": "v",
                "member": True,
                "reasons": ["price comparison", "interest in home"],
            },
            {
                "persona_id": "b",
                "segment": "s",
                "score": 0.2,
                "percentile": 20.0,
                "model_version": "v",
                "member": False,
                "reasons": None,
            },
        ],
        schema=SCORES_SCHEMA,
    )
    profiles, _, _, _ = build_partition(0, features, scores, None, None, None, ["s"], 3)
    assert profiles.column(score_column("s", "reasons")).to_pylist() == [["price comparison", "interest in home"], None]
