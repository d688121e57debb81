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


_INFRA_NAMES = (
    "EndpointConnectionError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ConnectionClosedError",
    "ProxyConnectionError",
    "ClientConnectorError",
    "ServerDisconnectedError",
)

# the AWS credential chain found nothing usable: the user's to set, not the store's fault
_CREDENTIAL_NAMES = ("NoCredentialsError", "PartialCredentialsError")


def _causes(exc: BaseException):
    """`exc` and what it wraps: `__cause__`/`__context__` chains and Ray's task errors (their `cause`)."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack.extend([current.__cause__, current.__context__, getattr(current, "cause", None)])


def classify(exc: BaseException) -> SegmentsError | None:
    """The user's or the infrastructure's fault behind an unexpected exception, when it can be told.

    A store or cluster that could not be reached after the retries is an InfraError (exit 3: retry later); a
    local path that cannot be written or read (missing, not a folder, no permission), or S3 without credentials,
    is a UserError naming it.
    """
    for cause in _causes(exc):
        if isinstance(cause, SegmentsError):
            return cause
        if type(cause).__name__ in _INFRA_NAMES or isinstance(cause, (ConnectionError, TimeoutError)):
            return InfraError(
                f"the object store or cluster did not answer after retries ({type(cause).__name__}: "
                f"{str(cause)[:300]}). Check that the endpoint is up and reachable, then run again: "
                "finished stages are kept."
            )
        if type(cause).__name__ in _CREDENTIAL_NAMES:
            return UserError(
                f"S3 needs credentials and none were usable ({type(cause).__name__}: {str(cause)[:200]}). Provide "
                "them through the AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or the "
                "node's instance role), never in the job config."
            )
        if isinstance(cause, (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)):
            what = f"path {cause.filename}: {cause.strerror}" if cause.filename else str(cause)
            return UserError(
                f"a path cannot be used ({type(cause).__name__}): {what[:400]}. Choose another path "
                "or fix its permissions."
            )
    return None
