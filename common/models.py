"""Typed models of the Go wire format, with codecs that match Go's ``encoding/json`` exactly.

Every class mirrors a struct of trpc-agent-go (``model.Response``, ``event.Event``, the session
documents of ``session/redis``). Attribute names are snake_case; the JSON names are the Go tags.
Field declaration order is the Go field order, because Go writes struct fields in that order.

Type conventions:

* ``bytes`` is a Go ``[]byte`` (base64 on the wire) and ``None`` is a nil slice;
* ``list[...] | None`` and ``dict[...] | None`` distinguish nil (``None``) from empty;
* raw JSON (``extensions`` values, track ``payload``) is ``bytes`` holding compact JSON text;
* ``X | None`` is a Go pointer; times are :class:`~sessionstreams.common.gotime.GoTime`.

``to_json`` produces exactly the bytes Go's ``json.Marshal`` produces; ``from_json`` accepts
exactly what Go's ``json.Unmarshal`` accepts (case-insensitive keys, ``null`` leaves zero values,
strict base64, the two-pass event decode) and raises
:class:`~sessionstreams.common.errors.DecodeError`
otherwise. The encoders and decoders live in :mod:`sessionstreams.common._codec`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import msgspec

from sessionstreams.common.gotime import GoTime

__all__ = [
    "AudioData",
    "Choice",
    "CompletionTokensDetails",
    "ContentPart",
    "ContentRef",
    "Event",
    "EventActions",
    "FileData",
    "FunctionDef",
    "GoTime",
    "ImageData",
    "Key",
    "Logprobs",
    "Message",
    "ParentMetadata",
    "PromptTokensDetails",
    "Response",
    "ResponseError",
    "Session",
    "SessionIndexEntry",
    "SessionMeta",
    "SessionStateDoc",
    "Summary",
    "SummaryBoundary",
    "TimingInfo",
    "TokenLogprob",
    "ToolCall",
    "TopLogprob",
    "TrackEvent",
    "TrackEvents",
    "Usage",
    "UserKey",
    "VideoData",
    "decode_summary_map",
    "encode_summary_map",
]

Int64 = Annotated[int, msgspec.Meta(ge=-(1 << 63), le=(1 << 63) - 1)]
_T = TypeVar("_T")


def _keep(value: _T, name: str | None = None) -> _T:
    """A field Go always writes (no ``omitempty``), even when it holds the zero value.

    msgspec's ``omit_defaults`` never treats the result of a custom ``default_factory`` as a
    default, so such a field is always encoded.
    """
    factory: Callable[[], _T] = lambda: value  # noqa: E731 - a closure over ``value``
    if name is None:
        return msgspec.field(default_factory=factory)
    return msgspec.field(default_factory=factory, name=name)


def _named(default: _T, name: str) -> _T:
    """An ``omitempty`` field with a Go tag different from the attribute name."""
    return msgspec.field(default=default, name=name)


class _Wire(msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """Base of the nested Go structs that msgspec encodes and decodes directly."""


# ---------------------------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------------------------
class Key(msgspec.Struct, frozen=True):
    """Identifies one session: ``Key("app", "user", "session-id")``."""

    app_name: str
    user_id: str
    session_id: str


class UserKey(msgspec.Struct, frozen=True):
    """Identifies one user of an app."""

    app_name: str
    user_id: str


# ---------------------------------------------------------------------------------------------
# model.Message and its parts
# ---------------------------------------------------------------------------------------------
class FunctionDef(_Wire):
    """``model.FunctionDefinitionParam``; ``arguments`` is written first, as a JSON string."""

    arguments: str = ""
    name: str = _keep("")
    strict: bool = False
    description: str = ""


class ToolCall(_Wire):
    """``model.ToolCall``; ``extra_fields`` numbers are float64, as in Go's ``map[string]any``."""

    type: str = _keep("")
    function: FunctionDef = msgspec.field(default_factory=FunctionDef)
    id: str = ""
    index: Int64 | None = None
    extra_fields: dict[str, Any] | None = None


class ImageData(_Wire):
    """``model.Image``."""

    url: str = _keep("")
    data: bytes | None = _keep(None)
    detail: str = ""
    format: str = ""


class AudioData(_Wire):
    """``model.Audio``."""

    url: str = ""
    data: bytes | None = _keep(None)
    format: str = _keep("")


class VideoData(_Wire):
    """``model.Video``."""

    url: str = ""
    data: bytes | None = _keep(None)
    format: str = _keep("")


class FileData(_Wire):
    """``model.File``."""

    filename: str = _keep("")
    url: str = ""
    data: bytes | None = _keep(None)
    file_id: str = _keep("")
    format: str = ""


class ContentRef(_Wire):
    """``model.ContentRef``: a reference to an artifact instead of inline data."""

    artifact_ref: str = _keep("")
    artifact_name: str = ""
    artifact_version: Int64 = _keep(0)
    mime_type: str = ""
    size_bytes: Int64 = 0
    sha256: str = ""
    original_name: str = ""
    event_id: str = ""
    request_id: str = ""


class ContentPart(_Wire):
    """``model.ContentPart``: one part of a multimodal message."""

    type: str = _keep("")
    text: str | None = None
    image: ImageData | None = None
    audio: AudioData | None = None
    video: VideoData | None = None
    file: FileData | None = None
    content_ref: ContentRef | None = None


class Message(_Wire):
    """``model.Message``; ``role`` is always written (``{"role":""}`` for a zero message)."""

    role: str = _keep("")
    content: str = ""
    content_parts: list[ContentPart] | None = None
    tool_id: str = ""
    tool_name: str = ""
    tool_calls: list[ToolCall] | None = None
    reasoning_content: str = ""
    reasoning_signature: str = ""


class TopLogprob(_Wire):
    """One alternative token of ``logprobs.content[].top_logprobs``."""

    token: str = _keep("")
    logprob: float = _keep(0.0)
    bytes: list[Int64] | None = None


class TokenLogprob(_Wire):
    """One token of ``logprobs.content``."""

    token: str = _keep("")
    logprob: float = _keep(0.0)
    bytes: list[Int64] | None = None
    top_logprobs: list[TopLogprob] | None = None


class Logprobs(_Wire):
    """``choice.logprobs``."""

    content: list[TokenLogprob] | None = None


class Choice(_Wire):
    """``model.Choice``; ``message`` and ``delta`` are always written."""

    index: Int64 = _keep(0)
    message: Message = msgspec.field(default_factory=Message)
    delta: Message = msgspec.field(default_factory=Message)
    finish_reason: str | None = None
    logprobs: Logprobs | None = None


class PromptTokensDetails(_Wire):
    """``usage.prompt_tokens_details``."""

    cached_tokens: Int64 = _keep(0)
    cache_creation_tokens: Int64 = 0
    cache_read_tokens: Int64 = 0


class CompletionTokensDetails(_Wire):
    """``usage.completion_tokens_details``."""

    reasoning_tokens: Int64 = 0


class TimingInfo(_Wire):
    """``usage.timing_info``: Go ``time.Duration`` values in integer nanoseconds."""

    time_to_first_token: Int64 = 0
    reasoning_duration: Int64 = 0


class Usage(_Wire):
    """``model.Usage``."""

    prompt_tokens: Int64 = _keep(0)
    completion_tokens: Int64 = _keep(0)
    total_tokens: Int64 = _keep(0)
    prompt_tokens_details: PromptTokensDetails = msgspec.field(default_factory=PromptTokensDetails)
    completion_tokens_details: CompletionTokensDetails = msgspec.field(
        default_factory=CompletionTokensDetails
    )
    timing_info: TimingInfo | None = None


class ResponseError(_Wire):
    """``model.ResponseError``."""

    message: str = _keep("")
    type: str = _keep("")
    param: str = ""
    code: str = ""


class Response(msgspec.Struct):
    """``model.Response``, embedded (flattened) in :class:`Event` on the wire.

    Positional construction follows the field order (Go's); keywords are clearer.
    """

    id: str = ""
    object: str = ""
    created: Int64 = 0
    model: str = ""
    choices: list[Choice] | None = None
    usage: Usage | None = None
    system_fingerprint: str | None = None
    error: ResponseError | None = None
    timestamp: GoTime = GoTime.ZERO
    done: bool = False
    is_partial: bool = False


class ParentMetadata(_Wire):
    """``event.ParentMetadata``."""

    trigger_type: str = _named("", "triggerType")
    trigger_id: str = _named("", "triggerId")
    trigger_name: str = _named("", "triggerName")


class EventActions(_Wire):
    """``event.EventActions``."""

    skip_summarization: bool = _named(False, "skipSummarization")


# ---------------------------------------------------------------------------------------------
# event.Event
# ---------------------------------------------------------------------------------------------
def _new_id() -> str:
    return str(uuid.uuid4())


class Event(msgspec.Struct):
    """``event.Event``: one agent event, stored as Go's ``json.Marshal(event)``.

    Prefer keyword arguments; positional ones follow the field order below.

    Defaults follow Go's ``event.New``: a random id, the current time and version 1. Decoding
    never uses them: an absent key decodes to Go's zero value.
    """

    response: Response | None = None
    request_id: str = _named("", "requestID")
    invocation_id: str = _named("", "invocationId")
    parent_invocation_id: str = _named("", "parentInvocationId")
    parent_metadata: ParentMetadata | None = _named(None, "parentMetadata")
    author: str = ""
    id: str = msgspec.field(default_factory=_new_id)
    timestamp: GoTime = msgspec.field(default_factory=GoTime.now)
    branch: str = ""
    tag: str = ""
    requires_completion: bool = _named(False, "requiresCompletion")
    long_running_tool_ids: set[str] | None = _named(None, "longRunningToolIDs")
    state_delta: dict[str, bytes | None] | None = _named(None, "stateDelta")
    extensions: dict[str, bytes | None] | None = None
    actions: EventActions | None = None
    filter_key: str = _named("", "filterKey")
    version: int = 1

    @classmethod
    def from_json(cls, data: bytes | bytearray | memoryview | str) -> Event:
        """Decode an event exactly as Go's ``Event.UnmarshalJSON`` does.

        Raises:
            DecodeError: Go would refuse the document.
        """
        return _codec.decode_event(data)

    def to_json(self) -> bytes:
        """Go's ``json.Marshal(event)``, byte for byte.

        Raises:
            ValueError: A value Go cannot encode (NaN, invalid raw JSON, year > 9999).
        """
        return _codec.encode_event(self)

    @classmethod
    def message(
        cls,
        role: str,
        content: str,
        *,
        author: str = "",
        invocation_id: str = "",
        request_id: str = "",
        state_delta: dict[str, bytes | None] | None = None,
        id: str | None = None,
        timestamp: GoTime | None = None,
        filter_key: str = "",
        branch: str = "",
        partial: bool = False,
    ) -> Event:
        """Build a plain chat message event (a ``chat.completion`` with one choice).

        Args:
            role: ``user``, ``assistant``, ``system`` or ``tool``.
            content: The message text.
            author: Defaults to ``"user"`` for user messages, otherwise ``"assistant"``.
            invocation_id: The invocation the event belongs to.
            request_id: The request (conversation turn) id.
            state_delta: State changes carried by the event.
            id: Event id; a random UUID by default.
            timestamp: Event time; now (UTC) by default.
            filter_key: Filter key (version 1 filtering).
            branch: Agent branch.
            partial: Mark the response as a streaming chunk (``is_partial``).

        Returns:
            The event, version 1.
        """
        msg = Message(role=role, content=content)
        resp = Response(
            object="chat.completion",
            choices=[Choice(index=0, message=msg)],
            done=True,
            is_partial=partial,
        )
        return cls(
            response=resp,
            request_id=request_id,
            invocation_id=invocation_id,
            author=author or ("user" if role == "user" else "assistant"),
            id=_new_id() if id is None else id,
            timestamp=GoTime.now() if timestamp is None else timestamp,
            branch=branch,
            state_delta=state_delta,
            filter_key=filter_key,
            version=1,
        )

    @property
    def is_partial(self) -> bool:
        """True when the response is a streaming chunk."""
        return self.response is not None and self.response.is_partial

    def is_valid_content(self) -> bool:
        """Go's ``Response.IsValidContent`` (false without a response)."""
        return self.response is not None and _codec.is_valid_content(self.response)

    def is_storable(self) -> bool:
        """True when the event enters the stored event list (reference §2.2)."""
        resp = self.response
        return resp is not None and not resp.is_partial and _codec.is_valid_content(resp)

    def is_user_message(self) -> bool:
        """True when any choice's message or delta has role ``user``."""
        resp = self.response
        if resp is None or not resp.choices:
            return False
        return any(c.message.role == "user" or c.delta.role == "user" for c in resp.choices)

    def matches_filter(self, key: str) -> bool:
        """Go's ``event.Filter(key)``: hierarchical prefix match on the event's filter key.

        The event's key is ``filter_key``, or ``branch`` when ``version != 1``.
        """
        own = self.filter_key if self.version == 1 else self.branch
        if not key or not own:
            return True
        own_s = own + "/"
        key_s = key + "/"
        return own_s.startswith(key_s) or key_s.startswith(own_s)


# ---------------------------------------------------------------------------------------------
# Session documents
# ---------------------------------------------------------------------------------------------
class _Doc(msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """Base of the stored session documents (they carry GoTime values)."""

    def to_json(self) -> bytes:
        """Go's ``json.Marshal`` of the document, byte for byte."""
        return _codec.encode_doc(self)

    @classmethod
    def from_json(cls: type[_D], data: bytes | bytearray | memoryview | str) -> _D:
        """Decode as Go's ``json.Unmarshal`` would.

        Raises:
            DecodeError: Go would refuse the document.
        """
        doc: _D = _codec.decode_doc(cls, data)
        return doc


_D = TypeVar("_D", bound=_Doc)


class SessionMeta(_Doc):
    """The HashIdx meta STRING document (reference §2.7)."""

    id: str = _keep("")
    app_name: str = _keep("", "appName")
    user_id: str = _keep("", "userID")
    state: dict[str, bytes | None] | None = _keep(None)
    generation: str = ""
    created_at: GoTime = _keep(GoTime.ZERO, "createdAt")
    updated_at: GoTime = _keep(GoTime.ZERO, "updatedAt")


class SessionStateDoc(_Doc):
    """The legacy ZSet ``SessionState`` HASH value (no appName/userID)."""

    id: str = _keep("")
    state: dict[str, bytes | None] | None = _keep(None)
    generation: str = ""
    created_at: GoTime = _keep(GoTime.ZERO, "createdAt")
    updated_at: GoTime = _keep(GoTime.ZERO, "updatedAt")


class SessionIndexEntry(_Doc):
    """A user session index HASH value: ``{"createdAt": ...}``."""

    created_at: GoTime = _keep(GoTime.ZERO, "createdAt")


class SummaryBoundary(_Doc):
    """Which events a summary covers."""

    version: Int64 = _keep(0)
    filter_key: str = ""
    cutoff_at: GoTime = _keep(GoTime.ZERO)
    last_event_id: str = ""


class Summary(_Doc):
    """``session.Summary``; ``updated_at`` is the cutoff time, not the write time."""

    summary: str = _keep("")
    topics: list[str] | None = None
    updated_at: GoTime = _keep(GoTime.ZERO)
    boundary: SummaryBoundary | None = None


class TrackEvent(_Doc):
    """One event of a track; ``payload`` is compact raw JSON text (``None`` is nil)."""

    track: str = _keep("")
    payload: bytes | None = _keep(None)
    timestamp: GoTime = _keep(GoTime.ZERO)


class TrackEvents(_Doc):
    """The ``{track, events}`` bundle returned by GetTrackEvents."""

    track: str = _keep("")
    events: list[TrackEvent] | None = _keep(None)


def encode_summary_map(m: dict[str, Summary | None] | None) -> bytes:
    """Go's ``json.Marshal`` of ``map[string]*Summary`` (keys sorted)."""
    return _codec.encode_summary_map(m)


def decode_summary_map(
    data: bytes | bytearray | memoryview | str,
) -> dict[str, Summary | None] | None:
    """Decode a stored summary map (Go- or cjson-written).

    Raises:
        DecodeError: Go would refuse the document.
    """
    return _codec.decode_summary_map(data)


class Session(msgspec.Struct, kw_only=True):
    """An in-memory session (reference §2.1); it is never stored as a whole.

    ``hash`` and ``service_meta`` are not serialized.
    """

    id: str
    app_name: str = msgspec.field(name="appName")
    user_id: str = msgspec.field(name="userID")
    state: dict[str, bytes | None] = msgspec.field(default_factory=dict)
    events: list[Event] = msgspec.field(default_factory=list)
    tracks: dict[str, TrackEvents] | None = None
    summaries: dict[str, Summary] = msgspec.field(default_factory=dict)
    created_at: GoTime = msgspec.field(default_factory=GoTime.now, name="createdAt")
    updated_at: GoTime = msgspec.field(default_factory=GoTime.now, name="updatedAt")
    hash: int = 0
    service_meta: dict[str, str] = msgspec.field(default_factory=dict)

    @property
    def key(self) -> Key:
        """The session's :class:`Key`."""
        return Key(self.app_name, self.user_id, self.id)

    def to_json(self) -> bytes:
        """The session with Go's tags (``id, appName, userID, state, events, tracks, ...``)."""
        return _codec.encode_session(self)

    @classmethod
    def from_json(cls, data: bytes | bytearray | memoryview | str) -> Session:
        """Decode :meth:`to_json` output (or Go's ``json.Marshal(session)``).

        Raises:
            DecodeError: The document is not a valid session.
        """
        return _codec.decode_session(data)


from sessionstreams.common import _codec  # noqa: E402 - _codec needs the classes above
