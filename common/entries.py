"""Stream entries of the persist pipeline, msgspec-encoded (msgpack) once by the producer.

One entry per request. New fields get defaults; field types never change (``ENTRY_FORMAT`` is
bumped when an incompatible change is unavoidable).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from sessionstreams.common.errors import DecodeError
from sessionstreams.common.hashidx import AppendEntry
from sessionstreams.common.models import Key

Kind = Literal["event", "track", "state"]

#: The stream entry field holding the encoded entry.
FIELD = b"e"


class TrackPayload(msgspec.Struct, frozen=True, array_like=True):
    """A track event to append."""

    rid: str
    track: str
    track_json: bytes
    ts_ns: int
    track_ttl_s: int
    persist: bool


class StatePayload(msgspec.Struct, frozen=True, array_like=True):
    """A session-state patch (JSON object of base64 values or null)."""

    rid: str
    patch_json: bytes


class StreamEntry(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One request travelling through a shard stream."""

    kind: Kind
    app: str
    user: str
    sid: str
    route: str = "hashidx"
    incarnation: str = ""
    producer_ts: str = ""
    ttl_ms: int = 0
    storage_limit: int = 0
    user_state_ttl_ms: int = 0
    app_state_ttl_ms: int = 0
    traceparent: str = ""
    event: AppendEntry | None = None
    app_pairs: tuple[tuple[str, bytes], ...] = ()
    track: TrackPayload | None = None
    state: StatePayload | None = None

    @property
    def key(self) -> Key:
        """The session this entry belongs to."""
        return Key(self.app, self.user, self.sid)

    @property
    def rid(self) -> str:
        """The request id of the write."""
        payload = self.event or self.track or self.state
        return payload.rid if payload is not None else ""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(StreamEntry)


def encode_entry(entry: StreamEntry) -> bytes:
    """The bytes stored in the stream entry's ``e`` field."""
    return _encoder.encode(entry)


def decode_entry(data: bytes) -> StreamEntry:
    """Decode a stream entry; DecodeError carries the raw bytes."""
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise DecodeError(f"undecodable stream entry: {exc}", data) from exc


class EntryHeader(msgspec.Struct, frozen=True):
    """What can still be read from an entry that does not decode as a :class:`StreamEntry`:
    its session, route, request id and session TTL (``""`` / 0 when unreadable)."""

    key: Key
    route: str
    rid: str
    ttl_ms: int


class _LooseEntry(msgspec.Struct, kw_only=True):
    """Any map: the fields of a StreamEntry, each of any type (unknown fields ignored)."""

    app: Any = None
    user: Any = None
    sid: Any = None
    route: Any = "hashidx"
    ttl_ms: Any = 0
    event: Any = None
    track: Any = None
    state: Any = None


_loose_decoder = msgspec.msgpack.Decoder(_LooseEntry)


def decode_entry_header(data: bytes) -> EntryHeader | None:
    """The session and request id of an entry :func:`decode_entry` refuses, when they read
    as text (so its dead letter can still be reported to the writer); None otherwise."""
    try:
        loose = _loose_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    ids = (loose.app, loose.user, loose.sid)
    if not all(isinstance(part, str) and part for part in ids):
        return None
    rid = ""
    for payload in (loose.event, loose.track, loose.state):
        if isinstance(payload, list) and payload and isinstance(payload[0], str):
            rid = payload[0]
            break
    route = loose.route if isinstance(loose.route, str) else ""
    ttl_ms = loose.ttl_ms if type(loose.ttl_ms) is int and loose.ttl_ms > 0 else 0
    return EntryHeader(Key(*ids), route, rid, ttl_ms)


class SummaryJob(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A summary request travelling through a shard's summary stream.

    The stream entry also carries ``c``, the cut: the persist stream's last id when the job
    was queued, read by the script that queued it (the producer cannot know it).
    """

    app: str
    user: str
    sid: str
    filter_key: str = ""
    force: bool = False
    #: The filter keys to summarize, as the producer's allowlist and cascade chose them.
    targets: tuple[str, ...] = ("",)
    route: str = "hashidx"
    incarnation: str = ""
    producer_ts: str = ""
    traceparent: str = ""

    @property
    def key(self) -> Key:
        """The session to summarize."""
        return Key(self.app, self.user, self.sid)


#: The summary stream entry field holding the cut.
CUT_FIELD = b"c"

_job_decoder = msgspec.msgpack.Decoder(SummaryJob)


def encode_job(job: SummaryJob) -> bytes:
    """The bytes stored in the summary stream entry's ``e`` field."""
    return _encoder.encode(job)


def decode_job(data: bytes) -> SummaryJob:
    """Decode a summary job; DecodeError carries the raw bytes."""
    try:
        return _job_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise DecodeError(f"undecodable summary job: {exc}", data) from exc
