"""Errors that are the user's to fix: the CLI prints them as one paragraph and exits with code 2."""


class UserError(Exception):
    """Bad input, bad config or a missing path: the message names the file, row or field at fault."""

    exit_code = 2
