"""Names that become path components (partner ids, segment names, run dates), checked before any path is built.

Exports live at `ROOT/exports/PARTNER_ID/SEGMENT/RUN_DATE/`, and a partner's S3 policy and presigned URLs
are scoped to `ROOT/exports/PARTNER_ID/`. A name that could climb out of that folder (`..`), name a
sub-folder (`/`, `\\`), hide (a leading dot), collide with the exporter's own staging area (a leading
underscore), or smuggle control characters into a key would break that isolation, so every such name
goes through here first and a bad one is a `UserError` naming the value and the rule it breaks.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata

from jobs.errors import UserError

MAX_PARTNER_ID = 64
MAX_SEGMENT = 64

# Letters, digits, `_`, `-`, `.`; starts with a letter or digit (so never `.`/`..`/`_staging`).
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SEGMENT = re.compile(r"^[a-z0-9_]+$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _describe_problem(value: str, max_len: int) -> str | None:
    """Why `value` is not a safe path component, or None when it is."""
    if value == "":
        return "it is empty"
    if len(value) > max_len:
        return f"it is {len(value)} characters long (at most {max_len})"
    if any(unicodedata.category(ch).startswith("C") for ch in value):
        return "it contains control or invisible characters"
    if "/" in value or "\\" in value:
        return "it contains a path separator ('/' or '\\')"
    if ".." in value:
        return "it contains '..'"
    if value.startswith("."):
        return "it starts with a dot"
    if value.startswith("_"):
        return "it starts with '_' (reserved for staging folders)"
    if any(ch.isspace() for ch in value):
        return "it contains whitespace"
    if not _SAFE.match(value):
        bad = sorted({ch for ch in value if not (ch.isascii() and (ch.isalnum() or ch in "_.-"))})
        if not bad:
            return "it must start with a letter or digit"
        return f"it contains characters other than ASCII letters, digits, '_', '-' and '.': {''.join(bad)!r}"
    return None


def validate_partner_id(partner_id: object) -> str:
    """A partner id that is safe as one path component and one S3 policy prefix; else UserError."""
    if not isinstance(partner_id, str):
        raise UserError(f"partner id {partner_id!r} must be a string.")
    problem = _describe_problem(partner_id, MAX_PARTNER_ID)
    if problem:
        raise UserError(
            f"partner id {partner_id!r} is not allowed: {problem}. Partner ids are 1-{MAX_PARTNER_ID} ASCII "
            "letters, digits, '_', '-' or '.', starting with a letter or digit, without '..'."
        )
    return partner_id


def validate_segment_name(segment: object) -> str:
    """A segment name as configured (`[a-z0-9_]{1,64}`), safe as one path component; else UserError."""
    if not isinstance(segment, str):
        raise UserError(f"segment name {segment!r} must be a string.")
    problem = _describe_problem(segment, MAX_SEGMENT)
    if problem is None and not _SEGMENT.match(segment):
        problem = "it has characters other than lowercase letters, digits and '_'"
    if problem:
        raise UserError(
            f"segment name {segment!r} is not allowed: {problem}. Segment names are 1-{MAX_SEGMENT} lowercase "
            "letters, digits or '_', starting with a letter or digit."
        )
    return segment


def validate_run_date(run_date: object) -> str:
    """A run date as it appears in export paths: a real calendar date written YYYY-MM-DD; else UserError."""
    if isinstance(run_date, dt.datetime):
        run_date = run_date.date()
    if isinstance(run_date, dt.date):
        return run_date.isoformat()
    if not isinstance(run_date, str) or not _DATE.match(run_date):
        raise UserError(f"run date {run_date!r} is not allowed: run dates are written YYYY-MM-DD.")
    try:
        dt.date.fromisoformat(run_date)
    except ValueError:
        raise UserError(f"run date {run_date!r} is not a calendar date (YYYY-MM-DD).") from None
    return run_date
