"""Session summaries: the Summarizer protocol and the reference's summary rules (ref. §7).

No Redis here. This module decides which filter keys a request summarizes (allowlist and
cascade, §7.5), which events are new since the previous summary's boundary (the *delta*), what
the summarizer is shown (a temporary session: the previous summary as a ``system`` event, then
the delta), and the new boundary (§7.3). Storage is the engines' ``set_summary`` ("set if
newer" on parsed times, :mod:`.summary_store`); the caller path is the producer's
SessionService, the queued path the summary workers.

A summarizer is any object with two async methods (plain methods returning a value work too)::

    class MySummarizer:
        async def should_summarize(self, session: Session) -> bool: ...
        async def summarize(self, session: Session) -> str: ...
        def metadata(self) -> dict[str, Any]: ...   # optional

It may record what it covered in the temporary session's state, as Go summarizers do:
``summary:last_included_ts`` (RFC 3339 text) and ``summary:last_included_event_id``.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import msgspec

from sessionstreams.common.errors import ConfigError, DecodeError, SummarizeError
from sessionstreams.common.gotime import GoTime
from sessionstreams.common.models import Event, Session, Summary, SummaryBoundary

__all__ = [
    "LAST_INCLUDED_EVENT_ID",
    "LAST_INCLUDED_TS",
    "SummarizeError",
    "Summarizer",
    "allowed",
    "copy_summary",
    "delta_events",
    "load_summarizer",
    "run_cascade",
    "summarize_one",
    "summarizer_metadata",
    "summary_targets",
    "temp_session",
]

#: State keys a summarizer may set on the temporary session to say what it covered.
LAST_INCLUDED_TS = "summary:last_included_ts"
LAST_INCLUDED_EVENT_ID = "summary:last_included_event_id"

#: Persists one summary under a filter key (the caller path and the workers differ).
Persist = Callable[[str, Summary], Awaitable[object]]


@runtime_checkable
class Summarizer(Protocol):
    """What sessionstreams needs from a summarizer (``metadata()`` is optional)."""

    async def should_summarize(self, session: Session) -> bool:
        """Whether the temporary session is worth summarizing (skipped when forced)."""
        ...

    async def summarize(self, session: Session) -> str:
        """The summary text; empty text means "no update"."""
        ...


def summarizer_metadata(summarizer: Any) -> dict[str, Any]:
    """The summarizer's ``metadata()``, or ``{}`` when it has none."""
    meta = getattr(summarizer, "metadata", None)
    return dict(meta()) if callable(meta) else {}


def load_summarizer(spec: str) -> Summarizer:
    """Build a summarizer from an import path ``package.module:factory``.

    ``factory`` (dotted names allowed) is called without arguments when it is a class or a
    function; an object that already is a summarizer is used as it is.

    Raises:
        ConfigError: the path does not import, or the result is not a summarizer.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"summarizer {spec!r}: expected 'package.module:factory'")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"summarizer {spec!r}: {exc}") from exc
    if isinstance(target, Summarizer) and not inspect.isclass(target):
        made = target
    elif callable(target):
        try:
            made = target()
        except Exception as exc:
            raise ConfigError(f"summarizer {spec!r}: the factory failed: {exc!r}") from exc
    else:
        made = target
    if not isinstance(made, Summarizer):
        raise ConfigError(
            f"summarizer {spec!r} gave {type(made).__name__}, which lacks "
            "should_summarize(session) and summarize(session)"
        )
    return made


async def _value(result: Any) -> Any:
    return await result if inspect.isawaitable(result) else result


# -- which filter keys ---------------------------------------------------------------------
def _hierarchical(a: str, b: str) -> bool:
    """The reference's hierarchical match: ``a`` and ``a/b`` match each other."""
    if not a or not b:
        return True
    a_s, b_s = a + "/", b + "/"
    return a_s.startswith(b_s) or b_s.startswith(a_s)


def allowed(filter_key: str, allowlist: Sequence[str] | None) -> bool:
    """True when the policy lets ``filter_key`` be summarized (``""`` always is)."""
    if not filter_key or allowlist is None:
        return True
    return any(_hierarchical(filter_key, entry) for entry in allowlist)


def summary_targets(
    filter_key: str, allowlist: Sequence[str] | None, cascade: bool
) -> tuple[str, ...]:
    """The filter keys a queued request stores (ref. §7.5): the key when allowed, then the
    full-session key ``""`` when cascading. Empty: nothing to do."""
    if not filter_key:
        return ("",)
    out = (filter_key,) if allowed(filter_key, allowlist) else ()
    return (*out, "") if cascade else out


# -- what the summarizer sees ----------------------------------------------------------------
def delta_events(events: Sequence[Event], prev: Summary | None, filter_key: str) -> list[Event]:
    """Events after the previous summary's boundary that match ``filter_key`` (ref. §7.3).

    After the boundary's ``last_event_id`` when that event is present, else from its
    ``cutoff_at`` on (inclusive); every event without a previous summary.
    """
    start = 0
    boundary = prev.boundary if prev is not None else None
    if prev is not None:
        cutoff = boundary.cutoff_at if boundary is not None else prev.updated_at
        last_id = boundary.last_event_id if boundary is not None else ""
        found = next((i for i, e in enumerate(events) if last_id and e.id == last_id), None)
        if found is not None:
            start = found + 1
        else:
            start = next((i for i, e in enumerate(events) if e.timestamp >= cutoff), len(events))
    return [e for e in events[start:] if e.matches_filter(filter_key)]


def temp_session(
    session: Session, filter_key: str, prev: Summary | None, delta: Sequence[Event]
) -> Session:
    """The session handed to the summarizer: id ``<sid>:<filter key>``, the previous summary
    as a ``system`` event (when there is one), then the delta."""
    events: list[Event] = []
    if prev is not None and prev.summary:
        at = prev.updated_at if not prev.updated_at.is_zero else session.created_at
        events.append(Event.message("system", prev.summary, author="system", timestamp=at))
    events.extend(delta)
    return Session(
        id=f"{session.id}:{filter_key}", app_name=session.app_name, user_id=session.user_id,
        state=dict(session.state), events=events, created_at=session.created_at,
        updated_at=session.updated_at, hash=session.hash,
        service_meta=dict(session.service_meta),
    )


def _recorded(state: Mapping[str, bytes | None]) -> tuple[GoTime, str] | None:
    """The cutoff a summarizer recorded on the temporary session, if any."""
    raw = state.get(LAST_INCLUDED_TS)
    if not raw:
        return None
    try:
        at = GoTime.parse(raw.decode() if isinstance(raw, bytes) else str(raw))
    except (DecodeError, UnicodeDecodeError):
        return None
    eid = state.get(LAST_INCLUDED_EVENT_ID) or b""
    return at, eid.decode("utf-8", "replace") if isinstance(eid, bytes) else str(eid)


def new_boundary(
    prev: Summary | None, filter_key: str, delta: Sequence[Event], temp: Session
) -> SummaryBoundary:
    """The boundary of a new summary (ref. §7.3): the previous one moved to what the
    summarizer recorded, else to the latest delta event (ties go to the later event)."""
    base = prev.boundary if prev is not None and prev.boundary is not None else None
    cutoff = base.cutoff_at if base is not None else GoTime.ZERO
    last_id = base.last_event_id if base is not None else ""
    if delta:
        recorded = _recorded(temp.state)
        if recorded is not None:
            cutoff, last_id = recorded
        else:
            latest = max(enumerate(delta), key=lambda pair: (pair[1].timestamp, pair[0]))[1]
            cutoff, last_id = latest.timestamp, latest.id
    return SummaryBoundary(
        version=base.version if base is not None and base.version else 1,
        filter_key=filter_key, cutoff_at=cutoff.to_utc(), last_event_id=last_id,
    )


# -- running a summarizer ----------------------------------------------------------------------
async def summarize_one(
    summarizer: Any, session: Session, filter_key: str, force: bool
) -> Summary | None:
    """Summarize ``session`` for one filter key, in memory (ref. §7.3 step 4).

    Returns the new summary (also set in ``session.summaries``), or None when there is
    nothing to do: no new event (unless forced), the summarizer declined, or it returned
    empty text.

    Raises:
        SummarizeError: the summarizer raised.
    """
    prev = session.summaries.get(filter_key)
    delta = delta_events(session.events, prev, filter_key)
    if not delta and not force:
        return None
    temp = temp_session(session, filter_key, prev, delta)
    try:
        if not force and not await _value(summarizer.should_summarize(temp)):
            return None
        text = await _value(summarizer.summarize(temp))
    except (asyncio.CancelledError, TimeoutError):
        raise
    except Exception as exc:
        raise SummarizeError(f"summarize session {session.id} failed: {exc}") from exc
    if not isinstance(text, str) or not text.strip():
        return None
    boundary = new_boundary(prev, filter_key, delta, temp)
    summary = Summary(summary=text, updated_at=boundary.cutoff_at, boundary=boundary)
    session.summaries[filter_key] = summary
    return summary


def copy_summary(source: Summary, filter_key: str = "") -> Summary:
    """``source`` as the summary of another filter key (the cascade's full-session copy)."""
    boundary = source.boundary
    if boundary is not None:
        boundary = msgspec.structs.replace(boundary, filter_key=filter_key)
    return Summary(summary=source.summary, topics=source.topics, updated_at=source.updated_at,
                   boundary=boundary)


async def run_cascade(
    summarizer: Any,
    session: Session,
    filter_key: str,
    force: bool,
    targets: Sequence[str],
    persist: Persist,
) -> None:
    """Summarize ``session`` for each target and persist the results (ref. §7.5).

    With the request's key and ``""`` as targets: when every event matches the key, the
    key's summary is made once and copied to ``""``; otherwise both are made concurrently and
    the first error, in target order, is raised.
    """
    if not targets:
        return
    if len(targets) == 1 or filter_key not in targets or "" not in targets:
        for target in targets:
            await _one(summarizer, session, target, force, persist)
        return
    if all(e.matches_filter(filter_key) for e in session.events):
        made = await _one(summarizer, session, filter_key, force, persist)
        if made is not None:
            full = copy_summary(made, "")
            session.summaries[""] = full
            await persist("", full)
        return
    results = await asyncio.gather(
        _one(summarizer, session, filter_key, force, persist),
        _one(summarizer, session, "", force, persist),
        return_exceptions=True,
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def _one(
    summarizer: Any, session: Session, target: str, force: bool, persist: Persist
) -> Summary | None:
    made = await summarize_one(summarizer, session, target, force)
    if made is not None:
        await persist(target, made)
    return made
