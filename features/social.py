"""Social influence: campaign messages whose click token another persona clicked (forwarded links).

A (partner_id, click_token) pair names one campaign message; its message_sent rows are its recipients and
its message_click rows the clicks. Working that out needs every row of a token in one place, so the
distributed path shuffles `social_tokens` by (partner_id, click_token), runs `social_links` per token
partition and shuffles the links back by persona (`features.distributed`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from features.inputs import as_of_micros, select_events
from jobs.contract.schema import TS_TYPE

TOKEN_KEYS = ["partner_id", "click_token"]
TOKEN_SCHEMA = pa.schema(
    [
        ("partner_id", pa.string()),
        ("click_token", pa.string()),
        ("persona_id", pa.string()),
        ("event_type", pa.string()),
        ("event_id", pa.string()),
        ("ts", TS_TYPE),
    ]
)
LINK_SCHEMA = pa.schema(
    [
        ("persona_id", pa.string()),
        ("role", pa.string()),
        ("other_persona_id", pa.string()),
        ("partner_id", pa.string()),
        ("click_token", pa.string()),
        ("click_id", pa.string()),
        ("ts", TS_TYPE),
    ]
)
SNAPSHOT_LINK_SCHEMA = LINK_SCHEMA.append(pa.field("as_of", pa.date32()))


def social_tokens(events: pa.Table, as_of: dt.date) -> pa.Table:
    """message_sent / message_click rows before `as_of` that carry a click token (the map side of the token shuffle)."""
    events = select_events(events, as_of)
    keep = pc.and_kleene(
        pc.is_in(events.column("event_type"), value_set=pa.array(["message_sent", "message_click"])),
        pc.is_valid(events.column("click_token")),
    )
    return events.filter(pc.fill_null(keep, False)).select(TOKEN_SCHEMA.names).cast(TOKEN_SCHEMA)


def social_links(tokens: pa.Table) -> pa.Table:
    """Forwarded clicks among rows that hold every row of their (partner_id, click_token).

    A click is forwarded when its persona is not one of the token's recipients (message_sent personas).
    Each forwarded click gives one row per recipient (role "sender": the recipient's message was
    forwarded) and one row for the clicker (role "clicker"); `click_id` identifies the click event.
    """
    keys = TOKEN_KEYS
    sent = tokens.filter(pc.equal(tokens.column("event_type"), "message_sent")).select([*keys, "persona_id"])
    sent = sent.group_by([*keys, "persona_id"]).aggregate([]).select([*keys, "persona_id"])
    sent = sent.rename_columns([*keys, "sender"])
    clicks = tokens.filter(pc.equal(tokens.column("event_type"), "message_click"))
    clicks = clicks.select([*keys, "persona_id", "event_id", "ts"]).rename_columns([*keys, "clicker", "click_id", "ts"])
    if sent.num_rows == 0 or clicks.num_rows == 0:
        return LINK_SCHEMA.empty_table()
    pairs = clicks.join(sent, keys=keys, join_type="inner")
    own = pairs.filter(pc.equal(pairs.column("clicker"), pairs.column("sender")))
    own_clicks = own.select([*keys, "click_id"]).group_by([*keys, "click_id"]).aggregate([])
    forwarded = pairs.join(own_clicks, keys=[*keys, "click_id"], join_type="left anti")
    if forwarded.num_rows == 0:
        return LINK_SCHEMA.empty_table()
    n = forwarded.num_rows

    def rows(persona: str, other: str, role: str) -> pa.Table:
        return pa.table(
            {
                "persona_id": forwarded.column(persona),
                "role": pa.array([role] * n, pa.string()),
                "other_persona_id": forwarded.column(other),
                "partner_id": forwarded.column("partner_id"),
                "click_token": forwarded.column("click_token"),
                "click_id": forwarded.column("click_id"),
                "ts": forwarded.column("ts"),
            },
            schema=LINK_SCHEMA,
        )

    senders = rows("sender", "clicker", "sender")
    # a click on a message sent to several personas is still one click of its clicker
    click_keys = ["persona_id", "role", "partner_id", "click_token", "click_id", "ts"]
    clickers = rows("clicker", "sender", "clicker").group_by(click_keys).aggregate([("other_persona_id", "min")])
    clickers = clickers.select([*click_keys, "other_persona_id_min"]).rename_columns([*click_keys, "other_persona_id"])
    return pa.concat_tables([senders, clickers.select(LINK_SCHEMA.names).cast(LINK_SCHEMA)])


def snapshot_links(tokens: pa.Table, snapshots: Sequence[dt.date]) -> pa.Table:
    """`social_links` as of each cut-off, tagged with it (`as_of`): who counts as a recipient, and so which
    clicks are forwarded, depends on the messages sent before the cut-off."""
    ts = tokens.column("ts").cast(pa.int64())
    tables = []
    for as_of in snapshots:
        links = social_links(tokens.filter(pc.less(ts, as_of_micros(as_of))))
        tables.append(links.append_column("as_of", pa.array([as_of] * links.num_rows, pa.date32())))
    return pa.concat_tables(tables) if tables else SNAPSHOT_LINK_SCHEMA.empty_table()


def links_as_of(links: pa.Table, as_of: dt.date) -> pa.Table:
    """The `snapshot_links` rows of one cut-off, as `LINK_SCHEMA`."""
    at = pc.equal(links.column("as_of"), pa.scalar(as_of, pa.date32()))
    return links.filter(at).select(LINK_SCHEMA.names)
