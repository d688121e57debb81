"""The two failures a user or a scheduler must tell apart, each with its exit code.

The CLI prints either as one paragraph (no traceback; the run's log file keeps it) and exits with the code.
"""


class SegmentsError(Exception):
    exit_code = 1


class UserError(SegmentsError):
    """Bad input, bad config or a missing path: fix it and run again. The message names the file, row or field."""

    exit_code = 2


class InfraError(SegmentsError):
    """Infrastructure (object store, cluster) still unavailable after retries: retry later. Names what is down."""

    exit_code = 3
