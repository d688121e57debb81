"""The optional `reasons` column of exports (`export.reasons`): off by default, the members' labels when on."""

from __future__ import annotations

import pyarrow as pa

from jobs.exports.parts import EXPORT_SCHEMA, export_parts, export_schema, manifest, members
from jobs.segments.membership import SCORES_SCHEMA

SCORES = pa.Table.from_pylist(
    [
        {
            "persona_id": "a",
            "segment": "s",
            "score": 0.9,
            "percentile": 99.0,
            "model_version": "v",
            "member": True,
            "reasons": ["purchase frequency", "spend"],
        },
        {
            "persona_id": "b",
            "segment": "s",
            "score": 0.1,
            "percentile": 10.0,
            "model_version": "v",
            "member": False,
            "reasons": None,
        },
    ],
    schema=SCORES_SCHEMA,
)
KEYS = pa.Table.from_pylist(
    [  # persona a has two keys at p1, and one of them twice (a duplicated identity row)
        {"persona_id": "a", "partner_id": "p1", "key_type": "customer_id", "key": "c1"},
        {"persona_id": "a", "partner_id": "p1", "key_type": "customer_id", "key": "c1"},
        {"persona_id": "a", "partner_id": "p1", "key_type": "email_sha256", "key": "e1"},
    ]
)


def joined(reasons: bool) -> pa.Table:
    return KEYS.join(members(SCORES, reasons), "persona_id")


def test_without_the_flag_parts_keep_their_four_columns():
    assert members(SCORES).column_names == ["persona_id", "segment", "score", "percentile"]
    assert members(SCORES, True).column("reasons").to_pylist() == ["purchase frequency\x1fspend"]
    [(partner, segment, part)] = list(export_parts(joined(False)))
    assert (partner, segment) == ("p1", "s") and part.schema == EXPORT_SCHEMA and part.num_rows == 2
    assert export_schema(False) == EXPORT_SCHEMA


def test_with_the_flag_each_key_carries_its_members_reasons_once():
    [(_, _, part)] = list(export_parts(joined(True), reasons=True))
    assert part.schema == export_schema(True)
    assert part.to_pylist() == [
        {
            "key_type": "customer_id",
            "key": "c1",
            "score": 0.9,
            "percentile": 99.0,
            "reasons": ["purchase frequency", "spend"],
        },
        {
            "key_type": "email_sha256",
            "key": "e1",
            "score": 0.9,
            "percentile": 99.0,
            "reasons": ["purchase frequency", "spend"],
        },
    ]
    listed = manifest(
        run_id="r",
        run_date="2026-03-01",
        partner_id="p1",
        segment="s",
        model_version="v",
        write_id="w",
        created_at="t",
        membership="top_percent",
        parts=[],
        reasons=True,
    )
    assert listed["schema"][-1] == {"name": "reasons", "type": "list<item: string>"}
