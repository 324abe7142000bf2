"""The one exception hierarchy of sessionstreams.

Every error raised by the public API derives from :class:`SessionStoreError`. Redis client
exceptions are translated at the edge (``raise ConnectionFailedError(...) from exc``), so
callers never need to import redis-py to handle failures.
"""

from __future__ import annotations


class SessionStoreError(Exception):
    """Root of every error raised by sessionstreams."""


class ConfigError(SessionStoreError):
    """A setting is missing, malformed or contradicts another one (raised at start-up)."""


class InvalidKeyError(SessionStoreError, ValueError):
    """An app, user or session id (or a state key) is empty or not allowed."""


class InvalidArgumentError(SessionStoreError, ValueError):
    """An argument other than a key is not acceptable (nil session, bad page, bad event...)."""


class SessionNotFoundError(SessionStoreError, LookupError):
    """The session does not exist (never created, deleted or expired)."""


class SessionExistsError(SessionStoreError):
    """A create lost a race: another writer created the same session id first."""


class DecodeError(SessionStoreError, ValueError):
    """Stored data could not be decoded; ``raw`` carries the offending payload."""

    def __init__(self, message: str, raw: bytes | str | None = None) -> None:
        super().__init__(message)
        self.raw = raw


class CorruptDataError(SessionStoreError):
    """A stored key has the wrong Redis type or unusable content; nothing was written."""


class ConnectionFailedError(SessionStoreError, ConnectionError):
    """Redis could not be reached or the connection broke mid-command."""


class StoreTimeoutError(SessionStoreError, TimeoutError):
    """A Redis command did not answer in time (it may still have been applied)."""


class OutOfMemoryError(SessionStoreError):
    """Redis refused a write: it reached ``maxmemory`` (with ``noeviction``, the only policy
    we accept). Nothing was written; free memory or raise the limit, then retry."""


class SessionChangedError(SessionStoreError):
    """``append_event(..., unless_updated_after=t)``: the stored session was updated after
    ``t`` (another writer got there first); nothing was written."""


class BackpressureError(SessionStoreError):
    """The persist backlog is over its cap; retry later or slow down."""


class PersistTimeoutError(SessionStoreError, TimeoutError):
    """A streamed write was not persisted within the allowed wait."""


class PersistLostError(SessionStoreError):
    """Redis lost acknowledged streamed writes before they were applied (a restart without
    persistence, a failover before replication): they will never be applied. Reported once;
    ``receipts`` names them."""

    def __init__(self, message: str, receipts: tuple[object, ...] = ()) -> None:
        super().__init__(message)
        self.receipts = receipts


class PersistUncertainError(SessionStoreError):
    """Fewer replicas than required confirmed a write; it may be lost on failover."""


class DeadLetteredError(SessionStoreError):
    """A streamed write failed repeatedly and was moved to the dead-letter stream."""


class ClosedError(SessionStoreError, RuntimeError):
    """The service (or an adapter's session) was closed; no further calls are accepted."""


class SummarizeError(SessionStoreError):
    """The summarizer failed; nothing was stored (a good summary is never replaced)."""


class SummaryTimeoutError(SessionStoreError, TimeoutError):
    """A summary job did not finish within ``summary_job_timeout``; nothing was stored."""
