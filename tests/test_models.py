"""Unit tests of GoTime, the gojson helpers, the wire models and their two decode paths."""

from __future__ import annotations

import datetime as dt
import json
import math
import pickle
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sessionstreams.common._codec as codec
from sessionstreams.common import gojson
from sessionstreams.common.errors import DecodeError
from sessionstreams.common.gotime import GoTime
from sessionstreams.common.models import (
    Choice,
    ContentPart,
    ContentRef,
    Event,
    EventActions,
    FunctionDef,
    ImageData,
    Key,
    Logprobs,
    Message,
    ParentMetadata,
    Response,
    Session,
    SessionMeta,
    Summary,
    SummaryBoundary,
    TokenLogprob,
    ToolCall,
    TopLogprob,
    TrackEvent,
    TrackEvents,
    Usage,
    decode_summary_map,
    encode_summary_map,
)

T0 = GoTime.parse("2025-01-02T03:04:05.123456789Z")
MIN_NS = GoTime.parse("0000-01-02T00:00:00Z").unix_ns
MAX_NS = GoTime.parse("9999-12-30T23:59:59.999999999Z").unix_ns
OFFSETS = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: m * 60)


def slow_event(data: bytes | str, monkeypatch: pytest.MonkeyPatch) -> Event:
    """Decode with the fast path disabled."""

    def _fail(_data: Any) -> Any:
        raise ValueError("forced slow path")

    monkeypatch.setattr(codec, "_decode_event_in", _fail)
    try:
        return Event.from_json(data)
    finally:
        monkeypatch.undo()


# ---------------------------------------------------------------------------------------------
# GoTime
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "unix_ns", "offset_s", "go_text"),
    [
        ("2025-01-02T03:04:05.123456789Z", 1735787045123456789, 0, None),
        ("2025-01-02T11:04:08.987654321+08:00", 1735787048987654321, 28800, None),
        ("2025-01-01T23:34:09.5-03:30", 1735787049500000000, -12600, None),
        ("2025-01-02T03:04:06.120000000Z", 1735787046120000000, 0, "2025-01-02T03:04:06.12Z"),
        ("2025-01-02T03:04:07.000000000Z", 1735787047000000000, 0, "2025-01-02T03:04:07Z"),
        ("2025-01-02T03:04:05.123456+00:00", 1735787045123456000, 0, "2025-01-02T03:04:05.123456Z"),
        ("2025-01-02T03:04:05,5Z", 1735787045500000000, 0, "2025-01-02T03:04:05.5Z"),
        (
            "2025-01-02T03:04:05.1234567891234Z",
            1735787045123456789,
            0,
            "2025-01-02T03:04:05.123456789Z",
        ),
        ("2025-01-02T3:04:05Z", 1735787045000000000, 0, "2025-01-02T03:04:05Z"),
        ("0001-01-01T00:00:00Z", -62135596800000000000, 0, None),
        ("2024-02-29T00:00:00.0000001Z", 1709164800000000100, 0, None),
    ],
)
def test_gotime_parse_and_format(
    text: str, unix_ns: int, offset_s: int, go_text: str | None
) -> None:
    """Parsing accepts Go's forms and formatting writes Go's RFC3339Nano."""
    t = GoTime.parse(text)
    assert (t.unix_ns, t.offset_s) == (unix_ns, offset_s)
    assert t.to_text() == (go_text or text)


@pytest.mark.parametrize(
    "text",
    [
        "2025-01-02T03:04:05.123456",
        "2025-01-02t03:04:05Z",
        "2025-01-02T03:04:05z",
        "2025-01-02 03:04:05Z",
        "2025-01-02T03:04:05+0800",
        "2025-02-29T00:00:00Z",
        "2025-01-02T24:00:00Z",
        "2025-01-02T03:60:00Z",
        "2025-01-02T03:04:60Z",
        "2025-01-02T03:04:05.Z",
        "2025-01-02T03:04:05+25:00",
        "2025-01-02T03:04:05Z ",
        "２０２５-01-02T03:04:05Z",
        "",
    ],
)
def test_gotime_parse_rejects_what_go_rejects(text: str) -> None:
    """Go's rejections (naive, lower-case t/z, space, +0800, out of range) raise DecodeError."""
    with pytest.raises(DecodeError):
        GoTime.parse(text)


def test_gotime_value_semantics() -> None:
    """GoTime is immutable, hashable, ordered by instant, picklable; equality includes offset."""
    a = GoTime(10, 0)
    b = GoTime(10, 3600)
    assert a != b
    assert a.equal(b)
    assert hash(a) == hash(GoTime(10))
    assert a == GoTime(10)
    assert GoTime(9, 7200) < a <= b
    assert b >= a > GoTime(9)
    assert sorted([GoTime(3), GoTime(1), GoTime(2)]) == [GoTime(1), GoTime(2), GoTime(3)]
    with pytest.raises(AttributeError):
        a.unix_ns = 5  # type: ignore[misc]
    with pytest.raises(AttributeError):
        a.other = 1  # type: ignore[attr-defined]
    assert pickle.loads(pickle.dumps(b)) == b
    assert repr(b) == "GoTime(unix_ns=10, offset_s=3600)"


def test_gotime_zero_now_and_utc() -> None:
    """ZERO is Go's zero time, now() is UTC with ns, to_utc keeps the instant."""
    assert GoTime.ZERO.is_zero
    assert GoTime.ZERO.to_text() == "0001-01-01T00:00:00Z"
    assert GoTime(GoTime.ZERO.unix_ns, 3600).is_zero
    now = GoTime.now()
    assert now.offset_s == 0
    assert not now.is_zero
    t = GoTime.parse("2025-01-02T11:04:08.987654321+08:00")
    assert t.to_utc().to_text() == "2025-01-02T03:04:08.987654321Z"
    assert t.to_utc().equal(t)


def test_gotime_datetime_conversions() -> None:
    """from_datetime keeps the offset; to_datetime truncates to µs; naive datetimes fail."""
    tz = dt.timezone(dt.timedelta(hours=-3, minutes=-30))
    d = dt.datetime(2025, 1, 1, 23, 34, 9, 500001, tzinfo=tz)
    t = GoTime.from_datetime(d)
    assert t.to_text() == "2025-01-01T23:34:09.500001-03:30"
    assert t.to_datetime() == d
    assert t.to_datetime().utcoffset() == tz.utcoffset(None)
    assert GoTime(1735787045123456789).to_datetime().microsecond == 123456
    with pytest.raises(ValueError, match="aware"):
        GoTime.from_datetime(dt.datetime(2025, 1, 1))


def test_gotime_unencodable() -> None:
    """Years outside 0..9999 and offsets of 24h or more cannot be written, as in Go."""
    with pytest.raises(ValueError, match="year"):
        GoTime(MAX_NS + 2 * 86_400 * 10**9).to_text()
    with pytest.raises(ValueError, match="timezone"):
        GoTime(0, 24 * 3600).to_text()
    assert GoTime(0, 3600 + 59).to_text() == "1970-01-01T01:00:59+01:00"


@settings(max_examples=300, deadline=None, database=None)
@given(st.integers(MIN_NS, MAX_NS), OFFSETS)
def test_gotime_text_round_trip(unix_ns: int, offset_s: int) -> None:
    """parse(to_text(t)) == t for every encodable instant and minute offset."""
    t = GoTime(unix_ns, offset_s)
    assert GoTime.parse(t.to_text()) == t


# ---------------------------------------------------------------------------------------------
# gojson
# ---------------------------------------------------------------------------------------------
def test_encode_str_go_escapes() -> None:
    """Strings get Go's escapes: HTML chars, U+2028/9, control chars, raw UTF-8, DEL, slash."""
    s = '<a href="x">&</a>\u2028\u2029\n\r\t\x01\x1f\x7f/\\é😀'
    assert gojson.encode_str(s) == (
        b'"\\u003ca href=\\"x\\"\\u003e\\u0026\\u003c/a\\u003e\\u2028\\u2029\\n\\r\\t'
        b'\\u0001\\u001f\x7f/\\\\\xc3\xa9\xf0\x9f\x98\x80"'
    )
    assert gojson.encode_str("bad\udcffbyte") == b'"bad\\ufffdbyte"'


@settings(max_examples=300, deadline=None, database=None)
@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"])))
def test_encode_str_is_valid_json(s: str) -> None:
    """Any valid string encodes to JSON that decodes back to it, without raw <>&."""
    out = gojson.encode_str(s)
    assert json.loads(out) == s
    assert not {ord("<"), ord(">"), ord("&")} & set(out)
    assert "\u2028".encode() not in out
    assert "\u2029".encode() not in out


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (-2.0, "-2"),
        (0.0, "0"),
        (-0.0, "-0"),
        (-0.5, "-0.5"),
        (-1e-7, "-1e-7"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (123456789.0, "123456789"),
        (1.5e-300, "1.5e-300"),
        (0.000001, "0.000001"),
        (1.2345e-7, "1.2345e-7"),
        (1e15, "1000000000000000"),
        (-12.345678901234567, "-12.345678901234567"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (5e-324, "5e-324"),
    ],
)
def test_format_float_like_go(value: float, text: str) -> None:
    """float64 text matches Go: shortest digits, exponent only below 1e-6 or from 1e21."""
    assert gojson.format_float(value) == text


@settings(max_examples=500, deadline=None, database=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_format_float_round_trips(value: float) -> None:
    """The text parses back to the same float and uses an exponent only where Go does."""
    text = gojson.format_float(value)
    assert float(text) == value
    a = abs(value)
    assert ("e" in text) == (a != 0 and (a < 1e-6 or a >= 1e21))
    assert not text.endswith(".0")


def test_format_float_rejects_nan() -> None:
    """NaN and infinities cannot be encoded (Go's UnsupportedValueError)."""
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="unsupported"):
            gojson.format_float(bad)


def test_compact_raw() -> None:
    """Raw JSON is compacted and HTML-escaped with number text and escapes kept; bad JSON fails."""
    raw = b' { "q" : "x < y & z\\u00E9" ,\n "n" : 1.50, "l": [ 1 , "a b" ] } '
    assert gojson.compact_raw(raw) == b'{"q":"x \\u003c y \\u0026 z\\u00E9","n":1.50,"l":[1,"a b"]}'
    assert gojson.compact_raw(b'"\\ud800"') == b'"\\ud800"'
    for bad in (b"", b"{", b"[1,]", b"NaN", b"01", b"1 2"):
        with pytest.raises(ValueError):
            gojson.compact_raw(bad)


@settings(max_examples=200, deadline=None, database=None)
@given(st.binary())
def test_base64_round_trip(data: bytes) -> None:
    """Standard padded base64 round-trips; newlines inside are skipped like Go does."""
    text = gojson.b64encode(data)
    assert gojson.b64decode(text) == data
    assert gojson.b64decode("\n".join(text[i : i + 4] for i in range(0, len(text), 4))) == data


@pytest.mark.parametrize("text", ["aGk", "-_8=", "aGk==", "aG k=", "====", "aGk=\t", "a"])
def test_base64_strict(text: str) -> None:
    """Unpadded, URL-safe, over-padded or whitespace-laden base64 is refused, as in Go."""
    with pytest.raises(ValueError):
        gojson.b64decode(text)


def test_encode_value_float64_semantics() -> None:
    """``any`` values: numbers as float64, keys sorted at every level, Go string escapes."""
    value = {"n": 2, "f": 2.5e-7, "z": [True, None, {"b": "<", "a": 1.0}]}
    assert gojson.encode_value(value) == b'{"f":2.5e-7,"n":2,"z":[true,null,{"a":1,"b":"\\u003c"}]}'


# ---------------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------------
def test_event_message_defaults() -> None:
    """Event.message builds a done chat.completion with one choice, version 1, fresh id/time."""
    before = GoTime.now()
    e = Event.message("user", "hi", invocation_id="inv", request_id="req", filter_key="a/b")
    assert e.author == "user"
    assert e.version == 1
    assert e.filter_key == "a/b"
    assert e.response is not None
    assert e.response.object == "chat.completion"
    assert e.response.done
    assert not e.response.is_partial
    assert e.response.choices == [Choice(index=0, message=Message(role="user", content="hi"))]
    assert len(e.id) == 36
    assert e.timestamp >= before
    assert Event.message("assistant", "x").author == "assistant"
    assert Event.message("assistant", "x", author="bot", id="e1", timestamp=T0).id == "e1"
    assert Event.message("assistant", "x", partial=True).is_partial


def _resp(*choices: Choice, partial: bool = False) -> Response:
    return Response(choices=list(choices), is_partial=partial)


@pytest.mark.parametrize(
    ("response", "storable"),
    [
        (None, False),
        (_resp(), False),
        (_resp(Choice(message=Message(role="assistant"))), False),
        (_resp(Choice(message=Message(role="assistant", content="x"))), True),
        (_resp(Choice(message=Message(role="assistant", content="x")), partial=True), False),
        (_resp(Choice(delta=Message(reasoning_content="thinking"))), True),
        (_resp(Choice(message=Message(content_parts=[ContentPart(type="text", text="t")]))), True),
        (_resp(Choice(message=Message(tool_calls=[ToolCall(type="function")]))), True),
        (_resp(Choice(delta=Message(tool_id="call_1"))), True),
        (_resp(Choice(), Choice(message=Message(tool_id="call_1"))), False),
        (_resp(Choice(), Choice(delta=Message(content="late"))), True),
    ],
)
def test_is_storable(response: Response | None, storable: bool) -> None:
    """Only non-partial responses with valid content (reference §2.2) are storable."""
    assert Event(response=response).is_storable() is storable


def test_is_user_message() -> None:
    """Any choice's message or delta with role user makes a user message."""
    assert Event.message("user", "x").is_user_message()
    assert not Event.message("assistant", "x").is_user_message()
    assert not Event(response=None).is_user_message()
    assert Event(response=_resp(Choice(), Choice(delta=Message(role="user")))).is_user_message()


@pytest.mark.parametrize(
    ("own", "key", "version", "match"),
    [
        ("", "a", 1, True),
        ("a", "", 1, True),
        ("a", "a", 1, True),
        ("a", "a/b", 1, True),
        ("a/b", "a", 1, True),
        ("a/b", "a/c", 1, False),
        ("ab", "a", 1, False),
        ("a", "ab", 1, False),
    ],
)
def test_matches_filter(own: str, key: str, version: int, match: bool) -> None:
    """event.Filter: hierarchical prefix match on filterKey (version 1)."""
    assert Event(filter_key=own, branch="zzz", version=version).matches_filter(key) is match


def test_matches_filter_uses_branch_before_version_1() -> None:
    """With version != 1 the branch is the event's key."""
    e = Event(filter_key="x", branch="a/b", version=0)
    assert e.matches_filter("a")
    assert not e.matches_filter("x")


def rich_event() -> Event:
    """An event touching every encoding rule."""
    resp = Response(
        id="chatcmpl-1",
        object="chat.completion",
        created=1735787045,
        model="m<1>",
        choices=[
            Choice(
                index=0,
                message=Message(
                    role="assistant",
                    content="a & b",
                    content_parts=[
                        ContentPart(type="image", image=ImageData(url="u", data=b"\x00\xff")),
                        ContentPart(type="file", content_ref=ContentRef(artifact_ref="r")),
                    ],
                    tool_calls=[
                        ToolCall(
                            type="function",
                            function=FunctionDef(name="f", arguments='{"a":"<"}'),
                            id="c1",
                            index=0,
                            extra_fields={"n": 2.0, "s": "x", "l": [1.5, None]},
                        )
                    ],
                ),
                finish_reason="tool_calls",
                logprobs=Logprobs(
                    content=[
                        TokenLogprob(
                            token="a",
                            logprob=-2.0,
                            bytes=[97],
                            top_logprobs=[TopLogprob(token="b", logprob=-1e-7)],
                        )
                    ]
                ),
            )
        ],
        usage=Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3),
        system_fingerprint="fp",
        timestamp=GoTime.parse("2025-01-01T23:34:09.5-03:30"),
        done=True,
    )
    return Event(
        response=resp,
        request_id="req",
        invocation_id="inv",
        parent_invocation_id="pinv",
        parent_metadata=ParentMetadata(trigger_type="tool_call"),
        author="agent",
        id="evt-1",
        timestamp=T0,
        branch="a/b",
        tag="t1;t2",
        requires_completion=True,
        long_running_tool_ids={"c2", "c1"},
        state_delta={"k": b"v", "nil": None, "empty": b""},
        extensions={"x": b'{ "a" : [1.50] }', "n": None},
        actions=EventActions(skip_summarization=True),
        filter_key="a/b",
        version=1,
    )


def test_rich_event_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    """A rich event encodes Go-style and both decode paths give back the same event."""
    e = rich_event()
    data = e.to_json()
    assert b'"logprobs":{"content":[{"token":"a","logprob":-2,"bytes":[97],' in data
    assert b'"top_logprobs":[{"token":"b","logprob":-1e-7}]' in data
    assert b'"extra_fields":{"l":[1.5,null],"n":2,"s":"x"}' in data
    assert b'"function":{"arguments":"{\\"a\\":\\"\\u003c\\"}","name":"f"}' in data
    assert b'"longRunningToolIDs":{"c1":{},"c2":{}}' in data
    assert b'"stateDelta":{"empty":"","k":"dg==","nil":null}' in data
    assert b'"extensions":{"n":null,"x":{"a":[1.50]}}' in data
    assert data.endswith(
        b'"response":{"id":"chatcmpl-1","timestamp":"2025-01-01T23:34:09.5-03:30"}}'
    )
    fast = Event.from_json(data)
    slow = slow_event(data, monkeypatch)
    assert fast == slow
    assert fast.to_json() == data
    assert fast.extensions == {"x": b'{"a":[1.50]}', "n": b"null"}
    assert fast.response is not None
    assert fast.response.choices is not None
    tool_call = fast.response.choices[0].message.tool_calls
    assert tool_call is not None
    assert tool_call[0].extra_fields == {
        "n": 2.0,
        "s": "x",
        "l": [1.5, None],
    }


def test_empty_omitempty_collections_are_omitted() -> None:
    """Empty slices and maps with omitempty are dropped, like nil ones; choices [] is kept."""
    e = Event(
        response=Response(
            choices=[Choice(message=Message(role="user", tool_calls=[], content_parts=[]))]
        ),
        id="e",
        timestamp=T0,
        long_running_tool_ids=set(),
        state_delta={},
        extensions={},
    )
    assert e.to_json() == (
        b'{"object":"","created":0,"model":"","choices":[{"index":0,"message":{"role":"user"},'
        b'"delta":{"role":""}}],"done":false,"is_partial":false,"invocationId":"","author":"",'
        b'"id":"e","timestamp":"2025-01-02T03:04:05.123456789Z","version":1,'
        b'"response":{"timestamp":"0001-01-01T00:00:00Z"}}'
    )
    assert b'"choices":[]' in Event(response=Response(choices=[]), timestamp=T0).to_json()


def test_encode_errors() -> None:
    """Values Go cannot encode raise ValueError instead of producing bad JSON."""
    bad_float = Event(
        response=_resp(
            Choice(logprobs=Logprobs(content=[TokenLogprob(token="x", logprob=math.nan)]))
        )
    )
    with pytest.raises(ValueError, match="unsupported"):
        bad_float.to_json()
    with pytest.raises(ValueError):
        Event(extensions={"k": b"{not json"}).to_json()


def test_lone_surrogate_is_written_as_replacement_char() -> None:
    """A str holding invalid UTF-8 (a lone surrogate) is written as U+FFFD, never failing."""
    data = Event.message("user", "a\udcffb", id="e", timestamp=T0).to_json()
    assert Event.from_json(data).response.choices[0].message.content == "a\ufffdb"  # type: ignore[union-attr,index]


def test_arguments_given_as_bytes_are_written_as_string() -> None:
    """function.arguments held as bytes (Go's []byte) is still written as a JSON string."""
    call = ToolCall(type="function", function=FunctionDef(name="f", arguments=b'{"a":1}'))  # type: ignore[arg-type]
    data = Event(response=_resp(Choice(message=Message(tool_calls=[call]))), timestamp=T0).to_json()
    assert b'"function":{"arguments":"{\\"a\\":1}","name":"f"}' in data


# ---------------------------------------------------------------------------------------------
# Go decoding rules (the slow path and its agreement with the fast one)
# ---------------------------------------------------------------------------------------------
def test_decode_go_rules() -> None:
    """Case-insensitive keys, last duplicate wins, unknown keys ignored, null keeps zero."""
    data = (
        b'{"invocationId":"a","INVOCATIONID":"b","RequestId":"r","author":null,'
        b'"\xc5\xbfTATEDELTA":{"k":"aGk=\\n"},"unknown":[1,{"x":2}],"ID":"e","created":null,'
        b'"timestamp":"2025-01-02T03:04:05,5+01:00","response":{"ID":"rid"}}'
    )
    e = Event.from_json(data)
    assert (e.invocation_id, e.request_id, e.author, e.id) == ("b", "r", "", "e")
    assert e.state_delta == {"k": b"hi"}
    assert e.timestamp == GoTime.parse("2025-01-02T03:04:05.5+01:00")
    assert e.response is not None
    assert e.response.id == "rid"
    assert e.response.created == 0
    assert e.response.timestamp.is_zero


def test_decode_merges_duplicate_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    """Like Go, a repeated object key decodes into the same struct (the slow path merges)."""
    data = b'{"usage":{"prompt_tokens":1},"usage":{"completion_tokens":2},"id":"e"}'
    e = slow_event(data, monkeypatch)
    assert e.response is not None
    assert e.response.usage is not None
    assert (e.response.usage.prompt_tokens, e.response.usage.completion_tokens) == (1, 2)


def test_decode_broken_nested_response_is_tolerated() -> None:
    """A malformed nested "response" is ignored; a bad flat field is an error."""
    e = Event.from_json(b'{"object":"x","response":{"timestamp":"yesterday"}}')
    assert e.response is not None
    assert e.response.object == "x"
    assert e.response.timestamp.is_zero
    assert Event.from_json(b'{"response":"nope"}').response is None
    with pytest.raises(DecodeError) as info:
        Event.from_json(b'{"author":5}')
    assert info.value.raw == b'{"author":5}'


@pytest.mark.parametrize(
    "data",
    [
        b'{"created":1.0}',
        b'{"created":1e3}',
        b'{"created":9223372036854775808}',
        b'{"stateDelta":{"k":"aGk"}}',
        b'{"stateDelta":{"k":"-_8="}}',
        b'{"timestamp":"2025-01-02T03:04:05"}',
        b'{"longRunningToolIDs":{"a":1}}',
        b'{"choices":[{"logprobs":{"content":[{"logprob":1e999}]}}]}',
        b'{"id":"e"} x',
        b"[1]",
        b'{"id":"\xff',
    ],
)
def test_decode_rejects_what_go_rejects(data: bytes) -> None:
    """Documents Go's json.Unmarshal refuses raise DecodeError."""
    with pytest.raises(DecodeError):
        Event.from_json(data)


def test_decode_top_level_null_is_zero_event() -> None:
    """``null`` is a no-op for Go: the zero event."""
    e = Event.from_json(b"null")
    assert e.id == ""
    assert e.timestamp.is_zero
    assert e.version == 0
    assert e.response is None


def test_decode_invalid_utf8_becomes_replacement_chars() -> None:
    """Invalid UTF-8 bytes and unpaired surrogate escapes decode to U+FFFD, as in Go."""
    e = Event.from_json(b'{"author":"a\xffb","tag":"\\ud800x","branch":"\\ud83d\\ude00"}')
    assert (e.author, e.tag, e.branch) == ("a\ufffdb", "\ufffdx", "😀")


@pytest.mark.parametrize(
    "event",
    [
        rich_event(),
        Event.message("user", "hi <there>", id="e", timestamp=T0),
        Event(response=None, id="e", timestamp=T0),
        Event(response=Response(), id="e", timestamp=GoTime.ZERO, version=0),
    ],
    ids=["rich", "message", "no-response", "empty-response"],
)
def test_fast_and_slow_paths_agree(event: Event, monkeypatch: pytest.MonkeyPatch) -> None:
    """The msgspec fast path and the exact slow path decode Go JSON to equal events."""
    data = event.to_json()
    assert Event.from_json(data) == slow_event(data, monkeypatch)
    assert Event.from_json(data).to_json() == data


# ---------------------------------------------------------------------------------------------
# Session documents
# ---------------------------------------------------------------------------------------------
def test_session_meta_round_trip() -> None:
    """The HashIdx meta keeps key order, base64 state, null values and offsets."""
    meta = SessionMeta(
        id="s",
        app_name="app",
        user_id="u",
        state={"b": b"\x00", "a": None},
        created_at=T0,
        updated_at=GoTime(T0.unix_ns, 8 * 3600),
    )
    data = meta.to_json()
    assert data == (
        b'{"id":"s","appName":"app","userID":"u","state":{"a":null,"b":"AA=="},'
        b'"createdAt":"2025-01-02T03:04:05.123456789Z",'
        b'"updatedAt":"2025-01-02T11:04:05.123456789+08:00"}'
    )
    assert SessionMeta.from_json(data) == meta
    assert SessionMeta.from_json(b'{"ID":"s","state":null,"createdAt":null}').state is None


def test_summary_round_trip() -> None:
    """Summaries drop empty topics and keep the zero cutoff; maps are sorted by key."""
    s = Summary(summary="x", topics=[], updated_at=T0, boundary=SummaryBoundary())
    assert s.to_json() == (
        b'{"summary":"x","updated_at":"2025-01-02T03:04:05.123456789Z",'
        b'"boundary":{"version":0,"cutoff_at":"0001-01-01T00:00:00Z"}}'
    )
    m: dict[str, Summary | None] = {"b": s, "a": None}
    data = encode_summary_map(m)
    assert data.startswith(b'{"a":null,"b":{')
    back = decode_summary_map(data)
    assert back is not None
    assert back["a"] is None
    assert back["b"] == Summary(summary="x", updated_at=T0, boundary=SummaryBoundary())
    assert encode_summary_map(None) == b"null"
    assert decode_summary_map(b"null") is None


def test_track_events_round_trip() -> None:
    """Track payloads are raw JSON: compacted on write, nil written as null."""
    te = TrackEvent(track="t", payload=b'{ "a" : "<" }', timestamp=T0)
    assert te.to_json() == (
        b'{"track":"t","payload":{"a":"\\u003c"},"timestamp":"2025-01-02T03:04:05.123456789Z"}'
    )
    assert TrackEvent.from_json(te.to_json()).payload == b'{"a":"\\u003c"}'
    bundle = TrackEvents(track="t", events=[te, TrackEvent(track="t", timestamp=T0)])
    back = TrackEvents.from_json(bundle.to_json())
    assert back.events is not None
    assert back.events[1].payload == b"null"
    assert TrackEvents(track="t").to_json() == b'{"track":"t","events":null}'


def test_session_round_trip() -> None:
    """A Session serializes under Go's tags (not hash/service_meta) and decodes back."""
    s = Session(
        id="s",
        app_name="app",
        user_id="u",
        state={"k": b"v"},
        events=[rich_event(), Event.message("user", "hi", id="e2", timestamp=T0)],
        tracks={
            "t": TrackEvents(track="t", events=[TrackEvent(track="t", payload=b"1", timestamp=T0)])
        },
        summaries={"": Summary(summary="s", updated_at=T0)},
        created_at=T0,
        updated_at=T0,
        hash=7,
        service_meta={"storage_type": "hashidx"},
    )
    data = s.to_json()
    assert data.startswith(
        b'{"id":"s","appName":"app","userID":"u","state":{"k":"dg=="},"events":['
    )
    assert b"hash" not in data
    assert b"storage_type" not in data
    back = Session.from_json(data)
    assert back.key == Key("app", "u", "s")
    assert [e.to_json() for e in back.events] == [e.to_json() for e in s.events]
    assert back.tracks == s.tracks
    assert back.summaries == s.summaries
    assert (back.state, back.created_at, back.hash, back.service_meta) == ({"k": b"v"}, T0, 0, {})


def test_models_are_msgspec_structs() -> None:
    """The public models are msgspec Structs with Go tag names."""
    names = {f.name: f.encode_name for f in msgspec.structs.fields(Event)}
    assert names["request_id"] == "requestID"
    assert names["long_running_tool_ids"] == "longRunningToolIDs"
    assert Key("a", "u", "s") == Key(app_name="a", user_id="u", session_id="s")


# ---------------------------------------------------------------------------------------------
# Property: any event survives encode -> decode (both paths) -> encode
# ---------------------------------------------------------------------------------------------
_text = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=12)
_floats = st.floats(allow_nan=False, allow_infinity=False)
_json_values = st.recursive(
    st.none() | st.booleans() | _floats | st.integers(-(10**6), 10**6) | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_messages = st.builds(
    Message,
    role=st.sampled_from(["", "user", "assistant", "tool"]),
    content=_text,
    tool_id=_text,
    reasoning_content=_text,
    content_parts=st.none()
    | st.lists(st.builds(ContentPart, type=_text, text=st.none() | _text), max_size=2),
    tool_calls=st.none()
    | st.lists(
        st.builds(
            ToolCall,
            type=_text,
            function=st.builds(FunctionDef, name=_text, arguments=_text, strict=st.booleans()),
            id=_text,
            index=st.none() | st.integers(0, 5),
            extra_fields=st.none() | st.dictionaries(_text, _json_values, max_size=3),
        ),
        max_size=2,
    ),
)
_choices = st.builds(
    Choice,
    index=st.integers(0, 3),
    message=_messages,
    delta=_messages,
    finish_reason=st.none() | _text,
    logprobs=st.none()
    | st.builds(
        Logprobs,
        content=st.none()
        | st.lists(st.builds(TokenLogprob, token=_text, logprob=_floats), max_size=2),
    ),
)
_times = st.builds(GoTime, st.integers(MIN_NS, MAX_NS), OFFSETS)
_responses = st.builds(
    Response,
    id=_text,
    object=_text,
    created=st.integers(-(2**63), 2**63 - 1),
    model=_text,
    choices=st.none() | st.lists(_choices, max_size=2),
    usage=st.none() | st.builds(Usage, prompt_tokens=st.integers(0, 10**6)),
    system_fingerprint=st.none() | _text,
    timestamp=_times,
    done=st.booleans(),
    is_partial=st.booleans(),
)
_events = st.builds(
    Event,
    response=st.none() | _responses,
    request_id=_text,
    invocation_id=_text,
    author=_text,
    id=_text,
    timestamp=_times,
    branch=_text,
    tag=_text,
    requires_completion=st.booleans(),
    long_running_tool_ids=st.none() | st.sets(_text, max_size=3),
    state_delta=st.none() | st.dictionaries(_text, st.none() | st.binary(max_size=8), max_size=3),
    extensions=st.none()
    | st.dictionaries(
        _text, st.none() | _json_values.map(lambda v: json.dumps(v).encode()), max_size=3
    ),
    actions=st.none() | st.builds(EventActions, skip_summarization=st.booleans()),
    filter_key=_text,
    version=st.integers(0, 2),
)


@pytest.mark.parametrize("logprob", [-0.0, 0.0, -0.5])
def test_a_negative_zero_logprob_keeps_its_sign(logprob: float) -> None:
    """A logprob written -0 (Go keeps the sign) reads back as -0.0 and writes back the same
    bytes, alone and in a list of events (msgspec alone would read it as 0)."""
    from sessionstreams.common import _codec

    token = TokenLogprob(token="t", logprob=logprob,
                         top_logprobs=[TopLogprob(token="u", logprob=logprob)])
    event = Event(response=Response(choices=[Choice(logprobs=Logprobs(content=[token]))]))
    data = event.to_json()
    for got in (Event.from_json(data), *_codec.decode_events([data], lambda raw, exc: None)):
        read = got.response.choices[0].logprobs.content[0]
        assert math.copysign(1.0, read.logprob) == math.copysign(1.0, logprob)
        assert math.copysign(1.0, read.top_logprobs[0].logprob) == math.copysign(1.0, logprob)
        assert got.to_json() == data


@settings(max_examples=150, deadline=None, database=None)
@given(_events)
def test_any_event_round_trips(event: Event) -> None:
    """Encode -> fast decode -> encode is stable, and the slow path decodes the same event."""
    data = event.to_json()
    json.loads(data)  # always valid JSON
    fast = Event.from_json(data)
    assert fast.to_json() == data
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(codec, "_decode_event_in", _raise)
        assert Event.from_json(data) == fast


def _raise(_data: Any) -> Any:
    raise ValueError("forced slow path")
