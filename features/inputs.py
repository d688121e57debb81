"""The columns features read from events_resolved, and the rows they may see as of a cut-off.

Features read the input contract's columns (`jobs.contract.schema`, their types included) except
`session_id`, which the identity stage's `session_key` replaces, and `currency`, which no feature reads
(the contract carries no exchange rates), plus the two columns the identity stage adds. Nothing else is
read: `true_person_id` (synthetic ground truth) never reaches a feature.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc

from jobs.contract.schema import CONTRACT_SCHEMA, TS_TYPE

DAY_US = 86_400_000_000
UNREAD_CONTRACT_COLUMNS = ("session_id", "currency")
# added by the identity stage: the persona of the event, and its session (session_id or a device's gap-cut visit)
IDENTITY_COLUMNS = (pa.field("persona_id", pa.string()), pa.field("session_key", pa.string()))

INPUT_SCHEMA = pa.schema(
    [*IDENTITY_COLUMNS, *(field for field in CONTRACT_SCHEMA if field.name not in UNREAD_CONTRACT_COLUMNS)]
)
INPUT_COLUMNS = INPUT_SCHEMA.names


def as_of_micros(as_of: dt.date) -> int:
    """The cut-off (midnight UTC of `as_of`) in microseconds since the epoch."""
    return (as_of - dt.date(1970, 1, 1)).days * DAY_US


def conform(table: pa.Table) -> pa.Table:
    """The table reduced to `INPUT_SCHEMA`: only those columns, cast to their types; absent ones null."""
    columns = []
    for field in INPUT_SCHEMA:
        if field.name in table.column_names:
            column = table.column(field.name)
            if column.type != field.type:
                column = pc.cast(column, field.type, safe=False)
        else:
            column = pa.nulls(table.num_rows, field.type)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=INPUT_SCHEMA)


def select_events(table: pa.Table, as_of: dt.date) -> pa.Table:
    """The rows features may see as of `as_of`: a persona, and `ts < as_of`; conformed to `INPUT_SCHEMA`."""
    table = conform(table)
    cutoff = pa.scalar(as_of_micros(as_of), TS_TYPE)
    keep = pc.and_kleene(pc.is_valid(table.column("persona_id")), pc.less(table.column("ts"), cutoff))
    keep = pc.fill_null(keep, False)
    if table.num_rows == 0 or pc.all(keep).as_py():
        return table  # already selected (a later cut-off's rows were selected before the shuffle): no copy
    return table.filter(keep)
