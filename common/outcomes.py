"""Outcomes of a write: the statuses the Lua scripts return and the codes they record.

A session's request record (``ss:applied:...``, a ZSET) scores each request id with
``seq * 8 + code``; the codes are those of ``SS_CODE`` in ``common/lua/_lib.lua`` (a test reads
the Lua and compares). Scripts return a status per entry: an outcome's value, ``duplicate``
(the request was already recorded) or ``invalid:<reason>``. This module is the one place where
either is decoded, for the producer, the workers and the operator commands alike.
"""

from __future__ import annotations

import enum

#: A record's score is ``seq * RECORD_SLOTS + code``.
RECORD_SLOTS = 8
#: Request ids a session's record keeps (``SS_RECORD_CAP`` in ``_lib.lua``).
RECORD_CAP = 1024
#: TTL of our per-session bookkeeping keys (request record, ``ss:info``, ``ss:summary``) when
#: the session has none, refreshed by each of our writes to them (``SS_KEEP_MS``): the bound
#: on how long they outlive a session someone else deleted.
KEEP_MS = 7 * 86_400_000


class Outcome(enum.StrEnum):
    """The final outcome of one write, as recorded in the session's request record."""

    APPLIED = "applied"
    SESSION_GONE = "session_gone"
    SUPERSEDED = "superseded"
    INVALID = "invalid"
    DEAD_LETTERED = "dead_lettered"

    @property
    def code(self) -> int:
        """The code the scripts record for this outcome."""
        return _CODES[self]

    @classmethod
    def from_score(cls, score: float | bytes | str) -> Outcome:
        """The outcome of a request-record score (an unknown code reads as ``invalid``)."""
        code = int(float(score)) % RECORD_SLOTS
        return _BY_CODE.get(code, cls.INVALID)

    @classmethod
    def from_status(cls, status: str | bytes) -> Outcome | None:
        """The outcome of a script status; ``duplicate`` is APPLIED (the first write of that
        request applied), ``invalid:<reason>`` is INVALID, an unknown status None."""
        text = status.decode() if isinstance(status, bytes) else status
        known = _BY_STATUS.get(text)  # a dict lookup: an Enum call costs a microsecond
        if known is not None:
            return known
        head = text.partition(":")[0]
        try:
            return cls(head)
        except ValueError:
            return None

    @property
    def succeeded(self) -> bool:
        """True for APPLIED (a duplicate too)."""
        return self is Outcome.APPLIED

    @property
    def session_missing(self) -> bool:
        """True when the write found its session deleted, expired or re-created."""
        return self in (Outcome.SESSION_GONE, Outcome.SUPERSEDED)


#: The code a worker's apply script records for an applied request whose app state (another
#: slot) the worker writes after the script (``SS_APPLIED_HELD`` in ``_lib.lua``). It is read
#: as applied once the stream entry is acknowledged, which the worker does after that write:
#: a writer waiting for its receipt then reads its own app state too.
APPLIED_HELD_CODE = 6


def is_held(score: float | bytes | str) -> bool:
    """True for a request-record score of an applied request whose app state may be unwritten."""
    return int(float(score)) % RECORD_SLOTS == APPLIED_HELD_CODE


#: The status of every entry of a synchronous append made with ``unless_updated_after`` when the
#: stored session was updated later: nothing written, nothing recorded (no outcome: the caller
#: gets SessionChangedError and may retry with the same request).
STALE = "stale"

#: The status of a request whose id the record already holds (its first write applied).
DUPLICATE = "duplicate"

_CODES = {
    Outcome.APPLIED: 1,
    Outcome.SESSION_GONE: 2,
    Outcome.SUPERSEDED: 3,
    Outcome.INVALID: 4,
    Outcome.DEAD_LETTERED: 5,
}
_BY_CODE = {code: outcome for outcome, code in _CODES.items()}
#: The outcome of each status that is exactly an outcome's value, or ``duplicate``.
_BY_STATUS = {**{outcome.value: outcome for outcome in Outcome}, DUPLICATE: Outcome.APPLIED}

#: Statuses that end a streamed entry's life (acknowledged; the record holds the outcome).
FINAL_STATUSES = frozenset(
    {Outcome.APPLIED.value, DUPLICATE, Outcome.SESSION_GONE.value, Outcome.SUPERSEDED.value}
)
