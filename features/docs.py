"""FEATURES.md and `segments features list`: the catalogue rendered for people.

FEATURES.md at the repository root is `render_catalog(FeaturesConfig(), markdown=True)`; a test keeps the
file equal to it and its feature list equal to the columns of a computed table. Regenerate it with
`python -m features.docs > FEATURES.md`.
"""

from __future__ import annotations

from features.catalog import COUNTRY_OTHER, DAYPARTS, GROUPS, VOCABULARIES, WEEKDAYS, Feature, catalog, category_slots
from jobs.config import FeaturesConfig


def _type(feature: Feature) -> str:
    return "categorical" if feature.kind == "c" else feature.dtype


def _window(feature: Feature) -> str:
    return "all" if feature.window is None else f"{feature.window}d"


def _vocabulary(name: str, values: tuple[str, ...]) -> str:
    return f"- {name}: " + ", ".join(f"{i} = `{v}`" for i, v in enumerate(values)) + f", {len(values)} = other"


def render_catalog(config: FeaturesConfig, markdown: bool = False) -> str:
    """The catalogue for this features config: a Markdown document, or a plain table for a terminal."""
    features = catalog(config)
    if not markdown:
        header = ("#", "feature", "group", "type", "window", "missing", "description")
        rows = [
            (str(i), f.name, f.group, _type(f), _window(f), f.missing, f.description)
            for i, f in enumerate(features, start=1)
        ]
        widths = [max(len(r[k]) for r in [header, *rows]) for k in range(len(header) - 1)]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths)) + "  " + row[-1] for row in [header, *rows]
        ]
        return "\n".join([*lines, f"{len(features)} features"])

    slots = category_slots(config)
    out = [
        "# Feature catalogue",
        "",
        "Generated from `features/catalog.py` for the default configuration (`python -m features.docs >",
        "FEATURES.md`; `segments features list --markdown` prints the same for any config). A test keeps this",
        "file equal to that output and to the columns of the `features/` table: do not edit it by hand.",
        "",
        "A run's `features/` table holds one snapshot per cut-off of the run plan (`plan.json` `snapshots`: the",
        "scoring `as_of` and every segment's training, evaluation and refit cut-offs), each in its own partition",
        "folder `as_of=YYYY-MM-DD/`. A snapshot has one row per persona with an event before its cut-off:",
        f"`persona_id` (string), `as_of` (date32, the cut-off), then these {len(features)} features in this order.",
        "",
        "## Conventions",
        "",
        "- **Cut-off.** Only events with `ts < as_of` (midnight UTC) are seen. A window of `w` days covers",
        "  `as_of - w days <= ts < as_of`; `all` means all history before the cut-off. Events without a",
        "  `persona_id` are ignored, and so is `true_person_id`.",
        "- **Missing.** Counts (int64) and sums such as revenue are 0 when nothing happened. Everything else",
        "  is float64 and NaN where the value does not exist (a rate with nothing to divide, days since",
        "  something that never happened); the `missing` column says which.",
        "- **Categorical** features hold integer codes (as float64, NaN = missing) from the fixed",
        "  vocabularies below, the same in every run; `features.catalog.xgboost_feature_types` marks them",
        "  `c` so XGBoost reads them as categories.",
        "- **Orders** are distinct (partner_id, order_id) of purchase rows (a row without order_id is an",
        "  order by itself), at the time of their first line. Spend is price x quantity (quantity 1 when",
        "  absent), summed as given: the contract carries no exchange rates.",
        "- **Feature categories** are top-level categories (`electronics` of `electronics/phones`). There are",
        f"  {slots} slots, `cat00` to `cat{slots - 1:02d}`, filled from the run plan's `categories` (`plan.json`):",
        "  the categories pinned in `features.categories` in that order, or else the categories the configured",
        "  segments target plus the largest by events (with a persona) before the scoring cut-off, up to",
        "  `features.top_categories`, sorted by name. Every snapshot of a run uses the same list; it is also in",
        "  the `categories` field of the `features/_SUCCESS` marker. Slots with no category are 0 / NaN, and",
        f"  code {slots} (past the last slot) is another category, however many slots the plan filled.",
        "- **Reasons.** Each feature declares the partner-safe `reason` it is named by when it raises a member's",
        "  score (`scores/` `reasons`: the top three labels by XGBoost's contributions summed per label); a",
        "  reason is a behaviour, never a value or an id; `{category}` is the slot's category name.",
        "- **Online.** Features marked `live` are also updated between runs by the online API's live events",
        "  (`POST /v1/events`, `jobs.serving.online`): window counts, orders, items and revenue add the",
        "  persona's live events, `days_since_last_*` restart at its latest one; the others keep the run's value",
        f"  until the next run ({sum(f.online for f in features)} of {len(features)} features).",
        "- **Lifetime** features see the whole history before the cut-off (the windows stop at 365 days):",
        "  frequency, spend, customer tenure and recency relative to it, the rhythm of orders, as buy-till-",
        "  you-die models use them on sparse, purchase-only data.",
        "- **Emails and phones** are normalised as identity resolution does (`jobs.contract.normalise`):",
        "  emails trimmed, lowercased, `+tag` and gmail dots removed; phones in E.164 with the event's country",
        "  as the region of a number typed without a country code. A value that cannot be an email or a",
        "  possible phone number is not counted.",
        "- **Category median price** is the median over distinct offers (category path, product, partner,",
        "  price) of priced product views and purchases before the cut-off, across all personas.",
        "- **Comparison**: a purchase line is compared when the persona viewed the same product_id at 2 or",
        f"  more partners within `features.comparison_days` ({config.comparison_days}) days before it.",
        "- **Forwarded click**: a message_click carrying the (partner_id, click_token) of a message_sent,",
        "  by a persona that was not one of that token's recipients.",
        "- **Time of day** is UTC (the contract carries no time zone). Months are 30-day blocks back from the",
        "  cut-off.",
        "",
        "## Vocabularies (categorical codes)",
        "",
        *(_vocabulary(name, VOCABULARIES[name]) for name in ("device_type", "payment_method", "traffic_source")),
        "- weekday: " + ", ".join(f"{i} = {d}" for i, d in enumerate(WEEKDAYS)),
        "- country: (A..Z) x 26 + (A..Z) of the ISO alpha-2 code (BG = 32, DE = 82, RO = 456), "
        f"{COUNTRY_OTHER} = not two letters",
        f"- favourite_category: the slot number 0..{slots - 1}, {slots} = another category",
        "- day parts: " + ", ".join(f"{name} = {lo:02d}-{hi:02d}h" for name, lo, hi in DAYPARTS),
        "",
    ]
    index = {f.name: i for i, f in enumerate(features, start=1)}
    for group, title in GROUPS.items():
        members = [f for f in features if f.group == group]
        out += [
            f"## {title} ({len(members)})",
            "",
            "| # | feature | type | window | missing | online | reason | description |",
            "|---|---|---|---|---|---|---|---|",
        ]
        out += [
            f"| {index[f.name]} | `{f.name}` | {_type(f)} | {_window(f)} | {f.missing} | {'live' if f.online else ''} "
            f"| {f.reason} | {f.description} |"
            for f in members
        ]
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    import sys

    sys.stdout.write(render_catalog(FeaturesConfig(), markdown=True))
