"""Encoders and decoders behind :mod:`sessionstreams.common.models` (private).

Encoding: the models are msgspec Structs laid out in Go field order; non-``omitempty`` fields
use a custom default factory so msgspec always writes them. Events are copied into a flat wire
struct (Go flattens the embedded ``*Response``), floats and ``map[string]any`` values are
pre-rendered as :class:`msgspec.Raw` with Go's formatting, and the output gets Go's HTML-safe
escapes (``<>&`` U+2028 U+2029 can only occur inside strings, so a byte replace is exact).

Decoding has two paths. The fast path is msgspec typed decoding with unknown fields forbidden:
anything unusual (mis-cased or unknown keys, ``null`` scalars, lenient base64, a broken nested
``response``) makes it fail. The slow path then parses the text itself (keeping duplicate keys
and raw spans) and applies Go's rules: case-insensitive keys, ``null`` keeps zero values,
decoding into existing structs merges, strict base64, the two-pass event decode.

Known gap: a document that repeats an object-valued key with the exact same spelling is taken
by the fast path with "last wins", where Go would merge the two objects. Neither Go, cjson nor
this encoder writes duplicate keys.
"""

from __future__ import annotations

import logging
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import msgspec
from msgspec import UNSET, UnsetType

from sessionstreams.common import gojson
from sessionstreams.common.errors import DecodeError
from sessionstreams.common.gojson import Num, Obj
from sessionstreams.common.gotime import GoTime
from sessionstreams.common.models import (
    Choice,
    Event,
    EventActions,
    Int64,
    Logprobs,
    Message,
    ParentMetadata,
    Response,
    ResponseError,
    Session,
    SessionIndexEntry,
    SessionMeta,
    SessionStateDoc,
    Summary,
    SummaryBoundary,
    ToolCall,
    TrackEvent,
    TrackEvents,
    Usage,
    _Doc,
)

_log = logging.getLogger(__name__)
_SURROGATES = re.compile("[\ud800-\udfff]")
_ZERO = GoTime.ZERO
_raw_norm = gojson.compact_raw
_escape = gojson.escape_html
_EMPTY_OBJ: Final[dict[str, Any]] = {}
_NULL: Final = msgspec.Raw(b"null")
_replace = msgspec.structs.replace


def _enc_hook(obj: Any) -> Any:
    if type(obj) is GoTime:
        return obj.to_text()
    raise TypeError(f"cannot encode {type(obj).__name__}")


#: Parsed times by their text. GoTime is immutable, so one instance serves every document
#: that carries the same text (a session's recent events are read again on every turn).
_TIMES: dict[str, GoTime] = {}
_TIMES_MAX: Final = 8192


def _time(text: str) -> GoTime:
    """``GoTime.parse(text)``, memoised (bounded: the memo is cleared when full)."""
    t = _TIMES.get(text)
    if t is None:
        t = GoTime.parse(text)
        if len(_TIMES) >= _TIMES_MAX:
            _TIMES.clear()
        _TIMES[text] = t
    return t


def _dec_hook(tp: type, obj: Any) -> Any:
    if tp is GoTime and type(obj) is str:
        return _time(obj)
    raise TypeError(f"cannot decode {type(obj).__name__} as {tp.__name__}")


_encode = msgspec.json.Encoder(enc_hook=_enc_hook, order="deterministic").encode


# ---------------------------------------------------------------------------------------------
# Wire structs of the event
# ---------------------------------------------------------------------------------------------
def _always(value: Any) -> Any:
    """A field that is always written (see ``models._keep``)."""
    return msgspec.field(default_factory=lambda: value)


class _RespMetaOut(msgspec.Struct, omit_defaults=True):
    id: str = ""
    timestamp: str = _always("")


class _EventOutN(msgspec.Struct, omit_defaults=True):
    """An event with a nil Response: only the event fields."""

    requestID: str = ""
    invocationId: str = _always("")
    parentInvocationId: str = ""
    parentMetadata: Any = None
    author: str = _always("")
    id: str = _always("")
    timestamp: str = _always("")
    branch: str = ""
    tag: str = ""
    requiresCompletion: bool = False
    longRunningToolIDs: Any = None
    stateDelta: Any = None
    extensions: Any = None
    actions: Any = None
    filterKey: str = ""
    version: int = 0


class _EventOutR(msgspec.Struct, omit_defaults=True):
    """An event with a Response: flattened Response fields, event fields, ``response``."""

    object: str
    created: int = _always(0)
    model: str = _always("")
    choices: Any = _always(None)
    usage: Any = None
    system_fingerprint: Any = None
    error: Any = None
    done: bool = _always(False)
    is_partial: bool = _always(False)
    requestID: str = ""
    invocationId: str = _always("")
    parentInvocationId: str = ""
    parentMetadata: Any = None
    author: str = _always("")
    id: str = _always("")
    timestamp: str = _always("")
    branch: str = ""
    tag: str = ""
    requiresCompletion: bool = False
    longRunningToolIDs: Any = None
    stateDelta: Any = None
    extensions: Any = None
    actions: Any = None
    filterKey: str = ""
    version: int = 0
    response: Any = _always(None)


class _RespMetaIn(msgspec.Struct, forbid_unknown_fields=True):
    id: str = ""
    timestamp: str | UnsetType = UNSET


class _EventIn(msgspec.Struct, forbid_unknown_fields=True):
    object: str | UnsetType = UNSET
    created: Int64 | UnsetType = UNSET
    model: str | UnsetType = UNSET
    choices: list[Choice] | UnsetType | None = UNSET
    usage: Usage | UnsetType | None = UNSET
    system_fingerprint: str | UnsetType | None = UNSET
    error: ResponseError | UnsetType | None = UNSET
    done: bool | UnsetType = UNSET
    is_partial: bool | UnsetType = UNSET
    requestID: str = ""
    invocationId: str = ""
    parentInvocationId: str = ""
    parentMetadata: ParentMetadata | None = None
    author: str = ""
    id: str = ""
    timestamp: str | UnsetType = UNSET
    branch: str = ""
    tag: str = ""
    requiresCompletion: bool = False
    longRunningToolIDs: dict[str, dict[str, msgspec.Raw] | None] | None = None
    stateDelta: dict[str, bytes | None] | None = None
    extensions: dict[str, msgspec.Raw] | None = None
    actions: EventActions | None = None
    filterKey: str = ""
    version: Int64 = 0
    response: _RespMetaIn | UnsetType | None = UNSET


_decode_event_in = msgspec.json.Decoder(_EventIn).decode


# ---------------------------------------------------------------------------------------------
# Event encoding
# ---------------------------------------------------------------------------------------------
def encode_event(ev: Event) -> bytes:
    """Go's ``json.Marshal(event)``."""
    lrt = ev.long_running_tool_ids
    ext = ev.extensions
    sd = ev.state_delta
    r = ev.response
    if r is None:
        w: msgspec.Struct = _EventOutN(
            ev.request_id,
            ev.invocation_id,
            ev.parent_invocation_id,
            ev.parent_metadata,
            ev.author,
            ev.id,
            ev.timestamp.to_text(),
            ev.branch,
            ev.tag,
            ev.requires_completion,
            dict.fromkeys(lrt, _EMPTY_OBJ) if lrt else None,
            sd or None,
            _raw_map(ext) if ext else None,
            ev.actions,
            ev.filter_key,
            ev.version,
        )
    else:
        w = _EventOutR(
            r.object,
            r.created,
            r.model,
            _prep_choices(r.choices),
            r.usage,
            r.system_fingerprint,
            r.error,
            r.done,
            r.is_partial,
            ev.request_id,
            ev.invocation_id,
            ev.parent_invocation_id,
            ev.parent_metadata,
            ev.author,
            ev.id,
            ev.timestamp.to_text(),
            ev.branch,
            ev.tag,
            ev.requires_completion,
            dict.fromkeys(lrt, _EMPTY_OBJ) if lrt else None,
            sd or None,
            _raw_map(ext) if ext else None,
            ev.actions,
            ev.filter_key,
            ev.version,
            _RespMetaOut(r.id, r.timestamp.to_text()),
        )
    return _finish(w)


def _finish(obj: Any) -> bytes:
    try:
        return _escape(_encode(obj))
    except UnicodeEncodeError:
        # A lone surrogate (invalid UTF-8 in Go terms); Go writes U+FFFD in its place.
        return _escape(_encode(_scrub(obj)))


def _raw_map(m: dict[str, bytes | None]) -> dict[str, msgspec.Raw]:
    return {k: _NULL if v is None else msgspec.Raw(_raw_norm(v)) for k, v in m.items()}


def _prep_choices(choices: list[Choice] | None) -> list[Any] | None:
    """Pre-render what msgspec cannot write the Go way (floats, ``any``, empty omitempty)."""
    if not choices:
        return choices
    out: list[Any] | None = None
    for i, c in enumerate(choices):
        m = c.message
        d = c.delta
        nm = _prep_message(m)
        nd = _prep_message(d)
        lp = c.logprobs
        if lp is None and nm is m and nd is d:
            continue
        if out is None:
            out = list(choices)
        out[i] = _replace(
            c, message=nm, delta=nd, logprobs=None if lp is None else msgspec.Raw(_logprobs(lp))
        )
    return choices if out is None else out


def _prep_message(m: Message) -> Message:
    tcs = m.tool_calls
    cps = m.content_parts
    if (cps is None or cps) and (
        tcs is None
        or (tcs and all(t.extra_fields is None and type(t.function.arguments) is str for t in tcs))
    ):
        return m
    return _replace(
        m, content_parts=cps or None, tool_calls=[_prep_tool_call(t) for t in tcs] if tcs else None
    )


def _prep_tool_call(t: ToolCall) -> ToolCall:
    args: Any = t.function.arguments  # may be bytes, like Go's []byte
    fn = t.function
    if type(args) is not str:
        fn = _replace(fn, arguments=bytes(args).decode("utf-8", "replace"))
    xf = t.extra_fields
    return _replace(
        t, function=fn, extra_fields=msgspec.Raw(gojson.encode_value(xf)) if xf else None
    )


def _logprobs(lp: Logprobs) -> bytes:
    if not lp.content:
        return b"{}"
    items = []
    for tok in lp.content:
        parts = [b'{"token":', gojson.encode_str(tok.token), b',"logprob":']
        parts.append(gojson.format_float(tok.logprob).encode())
        if tok.bytes:
            parts.append(b',"bytes":' + msgspec.json.encode(tok.bytes))
        if tok.top_logprobs:
            tops = []
            for top in tok.top_logprobs:
                t = [b'{"token":', gojson.encode_str(top.token), b',"logprob":']
                t.append(gojson.format_float(top.logprob).encode())
                if top.bytes:
                    t.append(b',"bytes":' + msgspec.json.encode(top.bytes))
                tops.append(b"".join(t) + b"}")
            parts.append(b',"top_logprobs":[' + b",".join(tops) + b"]")
        items.append(b"".join(parts) + b"}")
    return b'{"content":[' + b",".join(items) + b"]}"


def _scrub(obj: Any) -> Any:
    """A copy of ``obj`` with lone surrogates replaced by U+FFFD (only on the error path)."""
    if isinstance(obj, str):
        return _SURROGATES.sub("\ufffd", obj)
    if isinstance(obj, msgspec.Struct):
        changes = {f: _scrub(getattr(obj, f)) for f in obj.__struct_fields__}
        return _replace(obj, **changes)
    if isinstance(obj, list):
        return [_scrub(x) for x in obj]
    if isinstance(obj, set | frozenset):
        return {_scrub(x) for x in obj}
    if isinstance(obj, dict):
        return {_scrub(k): _scrub(v) for k, v in obj.items()}
    return obj


# ---------------------------------------------------------------------------------------------
# Event decoding
# ---------------------------------------------------------------------------------------------
def decode_event(data: bytes | bytearray | memoryview | str) -> Event:
    """Decode an event: msgspec fast path, exact slow path when it fails."""
    try:
        return _event_from_wire(_decode_event_in(data), data)
    except Exception:
        pass
    ev: Event = _slow(data, lambda dec, tree: dec.event(tree))
    return ev


def decode_events(
    raws: Iterable[bytes], on_error: Callable[[bytes, DecodeError], None]
) -> list[Event]:
    """Decode stored events in order (as :func:`decode_event` each, without its call
    overhead); an event Go would refuse is left out and passed to ``on_error``."""
    out: list[Event] = []
    append = out.append
    fast = _decode_event_in
    wire = _event_from_wire
    for raw in raws:
        try:
            append(wire(fast(raw), raw))
            continue
        except Exception:
            pass
        try:
            append(_slow(raw, lambda dec, tree: dec.event(tree)))
        except DecodeError as exc:
            on_error(raw, exc)
    return out


def _event_from_wire(w: _EventIn, data: bytes | bytearray | memoryview | str) -> Event:
    ob, cr, mo, ch, us, sf, er, dn, ip = (
        w.object,
        w.created,
        w.model,
        w.choices,
        w.usage,
        w.system_fingerprint,
        w.error,
        w.done,
        w.is_partial,
    )
    resp: Response | None = None
    u = UNSET
    if not (
        ob is u and cr is u and mo is u and ch is u and us is u and sf is u and er is u
    ) or not (dn is u and ip is u):
        # Walking the choices (a few attribute reads per choice) is cheaper than searching
        # the document for the key, and sees every spelling of it msgspec accepted.
        if ch is not u and ch:
            _floatify_choices(ch, data)
        resp = Response(
            "",
            "" if ob is u else ob,
            0 if cr is u else cr,
            "" if mo is u else mo,
            None if ch is u else ch,
            None if us is u else us,
            None if sf is u else sf,
            None if er is u else er,
            _ZERO,
            False if dn is u else dn,
            False if ip is u else ip,
        )
    meta = w.response
    if meta is not u and meta is not None:
        if resp is None:
            resp = Response()
        resp.id = meta.id
        resp.timestamp = _ZERO if meta.timestamp is u else _time(meta.timestamp)
    lrt = w.longRunningToolIDs
    ext = w.extensions
    return Event(
        resp,
        w.requestID,
        w.invocationId,
        w.parentInvocationId,
        w.parentMetadata,
        w.author,
        w.id,
        _ZERO if w.timestamp is u else _time(w.timestamp),
        w.branch,
        w.tag,
        w.requiresCompletion,
        None if lrt is None else set(lrt),
        w.stateDelta,
        None if ext is None else {k: _raw_norm(bytes(v)) for k, v in ext.items()},
        w.actions,
        w.filterKey,
        w.version,
    )


def _floatify_choices(choices: list[Choice], data: bytes | bytearray | memoryview | str) -> None:
    """Go decodes ``extra_fields`` numbers as float64; do the same after msgspec.

    msgspec reads ``-0`` as the int 0, losing the sign Go keeps (in ``extra_fields`` and in the
    float ``logprob`` fields alike), so such documents go to the exact decoder instead.
    """
    for c in choices:
        if c.logprobs is not None and _has_negative_zero(data):
            raise ValueError("-0 in logprobs needs the exact decoder")
        for m in (c.message, c.delta):
            if m.tool_calls:
                for t in m.tool_calls:
                    if t.extra_fields:
                        if _has_negative_zero(data):
                            raise ValueError("-0 in extra_fields needs the exact decoder")
                        t.extra_fields = _floatify(t.extra_fields)


def _has_negative_zero(data: bytes | bytearray | memoryview | str) -> bool:
    if isinstance(data, str):
        return "-0" in data
    return b"-0" in (bytes(data) if isinstance(data, memoryview) else data)


def _floatify(v: Any) -> Any:
    if type(v) is int:
        return float(v)
    if type(v) is dict:
        return {k: _floatify(x) for k, x in v.items()}
    if type(v) is list:
        return [_floatify(x) for x in v]
    return v


def _slow(data: bytes | bytearray | memoryview | str, build: Any) -> Any:
    try:
        text = gojson.doc_text(data)
        return build(_SlowDecoder(text), gojson.parse_tree(text))
    except DecodeError as exc:
        raise DecodeError(str(exc), bytes(data) if not isinstance(data, str) else data) from exc
    except (ValueError, TypeError, RecursionError) as exc:
        raw = bytes(data) if not isinstance(data, str) else data
        raise DecodeError(f"invalid JSON document: {exc}", raw) from exc


# ---------------------------------------------------------------------------------------------
# Session documents
# ---------------------------------------------------------------------------------------------
class _TrackEventIn(msgspec.Struct, forbid_unknown_fields=True):
    track: str = ""
    payload: msgspec.Raw | UnsetType = UNSET
    timestamp: str | UnsetType = UNSET


class _TrackEventsIn(msgspec.Struct, forbid_unknown_fields=True):
    track: str = ""
    events: list[_TrackEventIn] | None = None


class _TrackEventOut(msgspec.Struct):
    track: str
    payload: msgspec.Raw
    timestamp: str


class _TrackEventsOut(msgspec.Struct):
    track: str
    events: list[_TrackEventOut] | None


def _track_event_from_wire(w: _TrackEventIn) -> TrackEvent:
    return TrackEvent(
        track=w.track,
        payload=None if w.payload is UNSET else _raw_norm(bytes(w.payload)),
        timestamp=_ZERO if w.timestamp is UNSET else _time(w.timestamp),
    )


def _track_event_out(t: TrackEvent) -> _TrackEventOut:
    p = t.payload
    return _TrackEventOut(
        t.track, _NULL if p is None else msgspec.Raw(_raw_norm(p)), t.timestamp.to_text()
    )


_DOC_DECODERS: dict[type, Any] = {
    cls: msgspec.json.Decoder(cls, dec_hook=_dec_hook).decode
    for cls in (SessionMeta, SessionStateDoc, SessionIndexEntry, Summary, SummaryBoundary)
}
_DOC_DECODERS[TrackEvent] = lambda data: _track_event_from_wire(
    msgspec.json.decode(data, type=_TrackEventIn)
)
_DOC_DECODERS[TrackEvents] = lambda data: _track_events_from_wire(
    msgspec.json.decode(data, type=_TrackEventsIn)
)


def _track_events_from_wire(w: _TrackEventsIn) -> TrackEvents:
    evs = None if w.events is None else [_track_event_from_wire(e) for e in w.events]
    return TrackEvents(track=w.track, events=evs)


def decode_doc(cls: type[Any], data: bytes | bytearray | memoryview | str) -> Any:
    """Decode one stored session document of type ``cls``."""
    try:
        return _DOC_DECODERS[cls](data)
    except Exception:
        pass
    return _slow(data, lambda dec, tree: dec.top(cls, tree))


def _doc_wire(doc: Any) -> Any:
    if type(doc) is TrackEvent:
        return _track_event_out(doc)
    if type(doc) is TrackEvents:
        evs = doc.events
        return _TrackEventsOut(
            doc.track, None if evs is None else [_track_event_out(e) for e in evs]
        )
    if type(doc) is Summary and doc.topics is not None and not doc.topics:
        return _replace(doc, topics=None)
    return doc


def encode_doc(doc: _Doc) -> bytes:
    """Go's ``json.Marshal`` of a session document."""
    return _finish(_doc_wire(doc))


def encode_summary_map(m: dict[str, Summary | None] | None) -> bytes:
    """Go's ``json.Marshal(map[string]*Summary)``."""
    if m is None:
        return b"null"
    return _finish({k: None if v is None else _doc_wire(v) for k, v in m.items()})


_decode_summary_map = msgspec.json.Decoder(
    dict[str, Summary | None] | None, dec_hook=_dec_hook
).decode


def decode_summary_map(
    data: bytes | bytearray | memoryview | str,
) -> dict[str, Summary | None] | None:
    """Decode a summary map (Go- or cjson-written)."""
    try:
        fast: dict[str, Summary | None] | None = _decode_summary_map(data)
        return fast
    except Exception:
        pass
    m: dict[str, Summary | None] | None = _slow(data, lambda dec, tree: dec.summary_map(tree))
    return m


class _SessionOut(msgspec.Struct, omit_defaults=True):
    id: str
    appName: str = _always("")
    userID: str = _always("")
    state: Any = _always(None)
    events: Any = _always(None)
    tracks: Any = None
    summaries: Any = None
    updatedAt: str = _always("")
    createdAt: str = _always("")


def encode_session(s: Session) -> bytes:
    """The session under Go's tags (it is never stored; this is for transport and tests)."""
    tracks = None
    if s.tracks:
        tracks = {k: msgspec.Raw(encode_doc(v)) for k, v in s.tracks.items()}
    w = _SessionOut(
        s.id,
        s.app_name,
        s.user_id,
        s.state,
        [msgspec.Raw(e.to_json()) for e in s.events],
        tracks,
        {k: _doc_wire(v) for k, v in s.summaries.items()} or None,
        s.updated_at.to_text(),
        s.created_at.to_text(),
    )
    return _finish(w)


def decode_session(data: bytes | bytearray | memoryview | str) -> Session:
    """Decode :func:`encode_session` output (always the exact decoder)."""
    s: Session = _slow(data, lambda dec, tree: dec.session(tree))
    return s


# ---------------------------------------------------------------------------------------------
# Predicates
# ---------------------------------------------------------------------------------------------
def is_valid_content(resp: Response) -> bool:
    """Go's ``Response.IsValidContent``."""
    choices = resp.choices
    if not choices:
        return False
    first = choices[0]
    if first.message.tool_calls or first.delta.tool_calls:
        return True
    if first.message.tool_id or first.delta.tool_id:
        return True
    for c in choices:
        for m in (c.message, c.delta):
            if m.content or m.content_parts or m.reasoning_content:
                return True
    return False


# ---------------------------------------------------------------------------------------------
# The exact (slow) decoder: Go's encoding/json rules applied to a parsed tree
# ---------------------------------------------------------------------------------------------
Kind = tuple[Any, ...]
_MISSING: Final[Any] = object()
_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1
_OVERRIDES: Final[dict[tuple[type, str], Kind]] = {
    (Event, "extensions"): ("opt", ("map", ("raw",))),
    (TrackEvent, "payload"): ("raw",),
    (ToolCall, "extra_fields"): ("opt", ("map", ("any",))),
}
_SKIP: Final = {"response", "hash", "service_meta"}  # not decoded from the struct's own keys
_GO_ZERO: Final[dict[type, dict[str, Any]]] = {
    Event: {"id": "", "timestamp": GoTime.ZERO, "version": 0},
    Session: {
        "id": "",
        "app_name": "",
        "user_id": "",
        "created_at": GoTime.ZERO,
        "updated_at": GoTime.ZERO,
    },
}


def _fold(key: str) -> str:
    """Go's key folding, reduced to what can match an ASCII tag (U+017F folds to 's')."""
    return key.lower().replace("\u017f", "s")


def field_kind(
    tp: Any, simple: Mapping[Any, str], special: Mapping[Any, Kind] | None = None
) -> Kind:
    """How a declared field type is walked, as a nested tuple: ``("opt", k)``, ``("list", k)``,
    ``("map", k)`` (string keys), ``("set",)``, ``("any",)``, ``("struct", cls)``, or the name
    ``simple`` gives a plain type (``special`` overrides whole types). Shared by the decoder
    and the write checks (common.validation), which name plain types their own way.

    Raises:
        TypeError: a type neither knows.
    """
    if special and tp in special:
        chosen: Kind = special[tp]
        return chosen
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return field_kind(typing.get_args(tp)[0], simple, special)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return ("opt", field_kind(args[0], simple, special))
    if origin is list:
        return ("list", field_kind(typing.get_args(tp)[0], simple, special))
    if origin is dict:
        return ("map", field_kind(typing.get_args(tp)[1], simple, special))
    if origin is set:
        return ("set",)
    if tp in simple:
        return (simple[tp],)
    if tp is Any:
        return ("any",)
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return ("struct", tp)
    raise TypeError(f"no rule for the field type {tp!r}")


_DECODE_SIMPLE: dict[Any, str] = {
    str: "str", int: "int", float: "float", bool: "bool", bytes: "b64", GoTime: "time",
}


def _kind(tp: Any) -> Kind:
    return field_kind(tp, _DECODE_SIMPLE, {Event: ("event",)})


_SPECS: dict[type, tuple[dict[str, tuple[str, Kind]], dict[str, tuple[str, Kind]]]] = {}


def _spec(cls: type) -> tuple[dict[str, tuple[str, Kind]], dict[str, tuple[str, Kind]]]:
    """``(by exact json name, by folded json name)`` -> ``(attribute, kind)`` for ``cls``."""
    spec = _SPECS.get(cls)
    if spec is None:
        exact: dict[str, tuple[str, Kind]] = {}
        folded: dict[str, tuple[str, Kind]] = {}
        for f in msgspec.structs.fields(cls):
            if f.name in _SKIP:
                continue
            entry = (f.name, _OVERRIDES.get((cls, f.name)) or _kind(f.type))
            exact[f.encode_name] = entry
            folded.setdefault(_fold(f.encode_name), entry)
        spec = _SPECS[cls] = (exact, folded)
    return spec


def _lookup(
    spec: tuple[dict[str, tuple[str, Kind]], dict[str, tuple[str, Kind]]], key: str
) -> tuple[str, Kind] | None:
    return spec[0].get(key) or spec[1].get(_fold(key))


class _SlowDecoder:
    """Go's ``json.Unmarshal`` semantics over a :func:`gojson.parse_tree` tree."""

    def __init__(self, text: str) -> None:
        self.text = text

    # -- generic values -----------------------------------------------------------------------
    def value(self, kind: Kind, node: Any, cur: Any, start: int = 0, end: int = 0) -> Any:
        """Decode ``node`` into a value of ``kind``; ``cur`` is the value being decoded into.

        Returns ``_MISSING`` when Go would leave the target unchanged (``null`` scalar).
        """
        tag = kind[0]
        if tag == "raw":
            return gojson.compact_raw(gojson.span_bytes(self.text[start:end]))
        if node is None:
            return None if tag in ("opt", "list", "map", "set", "any") else cur
        if tag == "opt":
            return self.value(kind[1], node, None if cur is _MISSING else cur, start, end)
        if tag == "str" and type(node) is str:
            return node
        if tag == "int" and type(node) is Num and not any(c in node for c in ".eE"):
            n = int(node)
            if _INT64_MIN <= n <= _INT64_MAX:
                return n
        elif tag == "float" and type(node) is Num:
            return _go_float(node)
        elif tag == "bool" and type(node) is bool:
            return node
        elif tag == "b64" and type(node) is str:
            return gojson.b64decode(node)
        elif tag == "time" and type(node) is str:
            return GoTime.parse(node)
        elif tag == "any":
            return _any(node)
        elif tag == "struct" and type(node) is Obj:
            return self.struct(kind[1], node, cur if isinstance(cur, kind[1]) else None)
        elif tag == "event" and type(node) is Obj:
            return self.event(node)
        elif tag == "list" and type(node) is list:
            base = cur if type(cur) is list else []
            return [
                self.value(kind[1], x, base[i] if i < len(base) else _MISSING)
                for i, x in enumerate(node)
            ]
        elif tag == "map" and type(node) is Obj:
            out = dict(cur) if type(cur) is dict else {}
            for key, v, s, e in node.pairs:
                val = self.value(kind[1], v, _MISSING, s, e)
                out[key] = _zero(kind[1]) if val is _MISSING else val
            return out
        elif tag == "set" and type(node) is Obj:
            if any(v is not None and type(v) is not Obj for _, v, _s, _e in node.pairs):
                raise DecodeError("cannot unmarshal a non-object into struct{}")
            return set(cur or ()) | {k for k, _v, _s, _e in node.pairs}
        raise DecodeError(f"cannot unmarshal {_json_type(node)} into a Go {tag} value")

    def struct(self, cls: type, node: Obj, base: Any) -> Any:
        """Decode an object into ``cls``, merging into ``base`` like Go does."""
        spec = _spec(cls)
        if base is None:
            vals: dict[str, Any] = dict(_GO_ZERO.get(cls, ()))
        else:
            vals = {f: getattr(base, f) for f in base.__struct_fields__}
        for key, v, s, e in node.pairs:
            hit = _lookup(spec, key)
            if hit is not None:
                attr, kind = hit
                val = self.value(kind, v, vals.get(attr, _MISSING), s, e)
                if val is not _MISSING:
                    vals[attr] = val
        return cls(**vals)

    def top(self, cls: type, node: Any) -> Any:
        """A whole document of struct type ``cls`` (a top-level ``null`` is a no-op)."""
        if node is None:
            return cls(**_GO_ZERO.get(cls, {}))
        if type(node) is not Obj:
            raise DecodeError(f"cannot unmarshal {_json_type(node)} into {cls.__name__}")
        return self.struct(cls, node, None)

    def summary_map(self, node: Any) -> Any:
        """``map[string]*Summary``."""
        return self.value(("opt", ("map", ("opt", ("struct", Summary)))), node, None)

    def session(self, node: Any) -> Session:
        """A :class:`Session` (nil maps and lists become empty ones)."""
        s: Session = self.top(Session, node)
        s.state = s.state or {}
        s.events = s.events or []
        s.summaries = {k: v for k, v in (s.summaries or {}).items() if v is not None}
        return s

    # -- event.Event ----------------------------------------------------------------------------
    def event(self, node: Any) -> Event:
        """Go's two-pass ``Event.UnmarshalJSON``."""
        if node is None:
            return Event(**_GO_ZERO[Event])
        if type(node) is not Obj:
            raise DecodeError(f"cannot unmarshal {_json_type(node)} into an event")
        ev_spec = _spec(Event)
        resp_spec = _spec(Response)
        ev: dict[str, Any] = dict(_GO_ZERO[Event])
        resp: dict[str, Any] | None = None
        for key, v, s, e in node.pairs:
            hit = _lookup(ev_spec, key)
            vals = ev
            if hit is None:
                hit = _lookup(resp_spec, key)
                if hit is None or hit[0] in ("id", "timestamp"):
                    continue  # unknown, or shadowed by the event's own id/timestamp
                if resp is None:
                    resp = {}
                vals = resp
            attr, kind = hit
            val = self.value(kind, v, vals.get(attr, _MISSING), s, e)
            if val is not _MISSING:
                vals[attr] = val
        response = None if resp is None else Response(**resp)
        meta = self._response_meta(node)
        if meta is not None:
            response = response or Response()
            response.id = meta.get("id", "")
            response.timestamp = meta.get("timestamp", GoTime.ZERO)
        return Event(response=response, **ev)

    def _response_meta(self, node: Obj) -> dict[str, Any] | None:
        """Pass two: the nested ``response`` id/timestamp; a broken one is only logged."""
        meta: dict[str, Any] | None = None
        try:
            for key, v, _s, _e in node.pairs:
                if key != "response" and _fold(key) != "response":
                    continue
                if v is None:
                    meta = None
                    continue
                if type(v) is not Obj:
                    raise DecodeError(f"cannot unmarshal {_json_type(v)} into response")
                meta = dict(meta or {})
                for k, x, _s2, _e2 in v.pairs:
                    name = k if k in ("id", "timestamp") else _fold(k)
                    if name == "id":
                        val = self.value(("str",), x, meta.get("id", _MISSING))
                    elif name == "timestamp":
                        val = self.value(("time",), x, meta.get("timestamp", _MISSING))
                    else:
                        continue
                    if val is not _MISSING:
                        meta[name] = val
        except (DecodeError, ValueError) as exc:
            _log.warning("ignoring malformed nested event response: %s", exc)
            return None
        return meta


def _go_float(text: str) -> float:
    f = float(text)
    if f in (float("inf"), float("-inf")):
        raise DecodeError(f"number {text} out of float64 range")
    return f


def _any(node: Any) -> Any:
    """Go's decoding into ``any``: objects -> dict (last duplicate wins), numbers -> float64."""
    if type(node) is Num:
        return _go_float(node)
    if type(node) is Obj:
        return {k: _any(v) for k, v, _s, _e in node.pairs}
    if type(node) is list:
        return [_any(x) for x in node]
    return node


def _zero(kind: Kind) -> Any:
    zeros = {"str": "", "int": 0, "float": 0.0, "bool": False, "time": GoTime.ZERO}
    if kind[0] == "struct":
        return kind[1](**_GO_ZERO.get(kind[1], {}))
    if kind[0] == "event":
        return Event(**_GO_ZERO[Event])
    return zeros.get(kind[0])


def _json_type(node: Any) -> str:
    if node is None:
        return "null"
    if type(node) is bool:
        return "bool"
    if type(node) is Num:
        return f"number {node}"
    if type(node) is str:
        return "string"
    return "array" if type(node) is list else "object"
