"""The Go golden fixtures: decode every case, compare with Go's view, re-encode byte for byte."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from sessionstreams.common._codec import decode_event
from sessionstreams.common.errors import DecodeError
from sessionstreams.common.gotime import GoTime
from sessionstreams.common.models import (
    Event,
    SessionIndexEntry,
    SessionMeta,
    SessionStateDoc,
    Summary,
    TrackEvent,
    TrackEvents,
    decode_summary_map,
    encode_summary_map,
)

# JSON written by the Go service's encoder (see golden/README.md); kept byte for byte.
GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
CASES: list[dict[str, Any]] = json.loads((GOLDEN_DIR / "index.json").read_text())["cases"]
_IDS = [c["name"] for c in CASES]

# Raw JSON fields (json.RawMessage): canonical form is the parsed value.
_RAW_FIELDS = {(TrackEvent, "payload")}


# ---------------------------------------------------------------------------------------------
# Canonical form of the golden README
# ---------------------------------------------------------------------------------------------
def canon_time(t: GoTime) -> dict[str, Any]:
    """``{"unix_ns", "offset_s", "text"}``."""
    return {"unix_ns": t.unix_ns, "offset_s": t.offset_s, "text": t.to_text()}


def canon_bytes(b: bytes | None) -> dict[str, str] | None:
    """``{"b64": ...}`` or null."""
    return None if b is None else {"b64": base64.b64encode(b).decode()}


def canon_raw(b: bytes | None) -> Any:
    """The parsed JSON value of a RawMessage."""
    return None if b is None else json.loads(b)


def canon_value(v: Any) -> Any:
    """Canonical form of a decoded value whose type alone tells the rule."""
    if isinstance(v, GoTime):
        return canon_time(v)
    if isinstance(v, bytes):
        return canon_bytes(v)
    if isinstance(v, msgspec.Struct):
        return canon_struct(v)
    if isinstance(v, set):
        return sorted(v)
    if isinstance(v, list):
        return [canon_value(x) for x in v]
    if isinstance(v, dict):
        return {k: canon_value(x) for k, x in v.items()}
    return v


def canon_struct(s: msgspec.Struct) -> dict[str, Any]:
    """Every field under its json tag name."""
    out = {}
    for f in msgspec.structs.fields(type(s)):
        v = getattr(s, f.name)
        out[f.encode_name] = canon_raw(v) if (type(s), f.name) in _RAW_FIELDS else canon_value(v)
    return out


def canon_event(e: Event) -> dict[str, Any]:
    """An event: the whole Response under ``response``, extensions as parsed JSON."""
    out = canon_struct(e)
    out["extensions"] = (
        None if e.extensions is None else {k: canon_raw(v) for k, v in e.extensions.items()}
    )
    return out


DECODERS: dict[str, Any] = {
    "event": Event.from_json,
    "meta": SessionMeta.from_json,
    "sessionstate": SessionStateDoc.from_json,
    "summary": Summary.from_json,
    "summarymap": decode_summary_map,
    "trackevent": TrackEvent.from_json,
    "trackevents": TrackEvents.from_json,
    "sessionindex": SessionIndexEntry.from_json,
}


def canon(kind: str, value: Any) -> Any:
    """Canonical form of a decoded document of ``kind``."""
    if kind == "event":
        return canon_event(value)
    return canon_value(value)


def encode(kind: str, value: Any) -> bytes:
    """Re-encode a decoded document of ``kind``."""
    if kind == "summarymap":
        return encode_summary_map(value)
    result: bytes = value.to_json()
    return result


def _case_files(case: dict[str, Any]) -> tuple[bytes, Any]:
    data = (GOLDEN_DIR / f"{case['name']}.json").read_bytes()
    expected = json.loads((GOLDEN_DIR / f"{case['name']}.expected.json").read_text())
    return data, expected


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------
def test_golden_index_is_complete() -> None:
    """Every golden case has a known kind and both of its files, and every file has a case."""
    assert CASES
    listed = {"index.json"}
    for case in CASES:
        assert case["kind"] in DECODERS
        listed |= {f"{case['name']}.json", f"{case['name']}.expected.json"}
    assert {p.name for p in GOLDEN_DIR.glob("*.json")} == listed


@pytest.mark.parametrize("case", CASES, ids=_IDS)
def test_decode_matches_go(case: dict[str, Any]) -> None:
    """Decoding the wire document gives the values Go gets (or fails where Go fails)."""
    data, expected = _case_files(case)
    decode = DECODERS[case["kind"]]
    if case["origin"] == "reject":
        with pytest.raises(DecodeError):
            decode(data)
        return
    value = decode(data)
    assert canon(case["kind"], value) == expected["value"]
    # The str input path gives the same value.
    assert canon(case["kind"], decode(data.decode())) == expected["value"]


@pytest.mark.parametrize(
    "case", [c for c in CASES if c["origin"] == "go-written"], ids=lambda c: c["name"]
)
def test_reencode_is_byte_exact(case: dict[str, Any]) -> None:
    """Re-encoding the decoded value reproduces Go's bytes (or decodes back the same)."""
    data, expected = _case_files(case)
    value = DECODERS[case["kind"]](data)
    out = encode(case["kind"], value)
    if case["byte_exact"]:
        assert out == data
    else:
        assert canon(case["kind"], DECODERS[case["kind"]](out)) == expected["value"]


@pytest.mark.parametrize(
    "case",
    [c for c in CASES if c["kind"] == "event" and c["origin"] != "reject"],
    ids=lambda c: c["name"],
)
def test_event_slow_path_matches(case: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The exact fallback decoder gives the same event as the fast path."""
    data, expected = _case_files(case)
    import sessionstreams.common._codec as codec

    def _fail(_data: Any) -> Any:
        raise ValueError("forced slow path")

    monkeypatch.setattr(codec, "_decode_event_in", _fail)
    assert canon_event(decode_event(data)) == expected["value"]
