"""Stored documents -> Session objects, with the reference filtering rules (no I/O)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import msgspec

from sessionstreams.common._codec import decode_events as decode_stored_events
from sessionstreams.common.errors import DecodeError
from sessionstreams.common.gotime import GoTime
from sessionstreams.common.hashidx import LoadResult
from sessionstreams.common.keys import session_hash
from sessionstreams.common.logs import get_logger
from sessionstreams.common.models import (
    Event,
    Key,
    Session,
    SessionMeta,
    Summary,
    TrackEvent,
    TrackEvents,
    decode_summary_map,
)
from sessionstreams.common.state import merge_scopes

log = get_logger("sessionstreams.read")

STORAGE_TYPE = "storage_type"
#: service_meta key of the incarnation (the meta generation) streamed writes are checked against.
INCARNATION = "incarnation"
HASHIDX = "hashidx"
ZSET = "zset"


def apply_event_filtering(
    events: Sequence[Event], num: int = 0, after: GoTime | None = None
) -> list[Event]:
    """The reference ``ApplyEventFiltering`` (ref. §4.3), on a chronological list."""
    window = list(events)
    if after is not None and not after.is_zero:
        cut = next((i for i, e in enumerate(window) if e.timestamp >= after), len(window))
        window = window[cut:]
    if num > 0 and len(window) > num:
        window = window[-num:]
    for i, event in enumerate(window):
        if event.is_user_message():
            return window[i:]
    for event in reversed(events):
        if event.is_user_message():
            return [event, *window]
    return []


def decode_events(raws: Iterable[bytes], key: Key) -> list[Event]:
    """Decode stored events; an undecodable one is skipped with a warning (as Go does)."""

    def skip(raw: bytes, exc: DecodeError) -> None:
        log.warning("skipping undecodable event", session=key.session_id, error=str(exc))

    return decode_stored_events(raws, skip)


def decode_meta(raw: bytes, key: Key) -> SessionMeta:
    """Decode a HashIdx meta; corrupt JSON is an error naming the session."""
    try:
        return SessionMeta.from_json(raw)
    except DecodeError as exc:
        raise DecodeError(f"unmarshal session meta of {key}: {exc}", raw) from exc


def track_names(state: Mapping[str, bytes | None], stored: Iterable[str] = ()) -> list[str]:
    """Track names from ``state["tracks"]`` (a JSON list), merged with the stored name SET."""
    names: list[str] = []
    raw = state.get("tracks")
    if raw:
        try:
            names = [n for n in msgspec.json.decode(raw) if isinstance(n, str)]
        except (msgspec.DecodeError, TypeError):
            names = []
    seen = set(names)
    names.extend(sorted(n for n in stored if n not in seen))
    return names


def window_events(
    loaded: LoadResult, key: Key, after: GoTime | None
) -> tuple[list[Event], bool]:
    """The filtered window of a load; the flag says a user message must still be looked up."""
    window = decode_events(loaded.events, key)
    if after is not None and not after.is_zero:
        window = [e for e in window if e.timestamp >= after]
    for i, event in enumerate(window):
        if event.is_user_message():
            return window[i:], False
    if loaded.prepend is not None:
        prepend = decode_events([loaded.prepend], key)
        return prepend + window, False
    # The window only looked like it held a user message (or holds none at all).
    needs_lookup = bool(window) and any(b'"role":"user"' in raw for raw in loaded.events)
    return ([] if not needs_lookup else window), needs_lookup


def attach_summaries(session: Session, raw: bytes | None) -> None:
    """Attach stored summaries when the session has events (as the reference does)."""
    if raw is None or not session.events:
        return
    try:
        summaries = decode_summary_map(raw) or {}
    except DecodeError as exc:
        log.warning("ignoring undecodable summaries", session=session.id, error=str(exc))
        return
    session.summaries = {k: v for k, v in summaries.items() if v is not None}


def build_session(
    key: Key,
    meta: SessionMeta,
    events: list[Event],
    user_state: Mapping[str, bytes],
    app_state: Mapping[str, bytes],
    storage: str = HASHIDX,
) -> Session:
    """Assemble a Session from its parts, tagged with the engine it lives in."""
    return Session(
        id=key.session_id,
        app_name=key.app_name,
        user_id=key.user_id,
        state=merge_scopes(meta.state or {}, user_state, app_state),
        events=events,
        created_at=meta.created_at,
        updated_at=meta.updated_at,
        hash=session_hash(key),
        service_meta={STORAGE_TYPE: storage, INCARNATION: meta.generation},
    )


def newest_first(session: Session) -> tuple[int, str]:
    """Sort key of a listing, ``reverse=True`` for newest ``updated_at`` first (then id): the
    instant as an int, as GoTime comparisons in Python cost a call each."""
    return session.updated_at.unix_ns, session.id


def decode_tracks(
    names: Sequence[str], replies: Sequence[Sequence[bytes]], key: Key
) -> dict[str, TrackEvents] | None:
    """Track events per name; tracks without events are left out, None when none remain."""
    tracks: dict[str, TrackEvents] = {}
    for name, raws in zip(names, replies, strict=True):
        events: list[TrackEvent] = []
        for raw in raws:
            try:
                events.append(TrackEvent.from_json(raw))
            except DecodeError as exc:
                log.warning("skipping undecodable track event", session=key.session_id,
                            track=name, error=str(exc))
        if events:
            tracks[name] = TrackEvents(track=name, events=events)
    return tracks or None


def pick_summary(
    summaries: Mapping[str, Summary | None], filter_key: str, min_time: GoTime | None
) -> str | None:
    """The reference pick rule (ref. §7.4): the key's summary, else the full-session one."""
    for candidate in (filter_key, "") if filter_key else ("",):
        s = summaries.get(candidate)
        if s is not None and s.summary and (
            min_time is None or min_time.is_zero or s.updated_at >= min_time
        ):
            return s.summary
    return None
