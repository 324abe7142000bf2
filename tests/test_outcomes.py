"""The outcome codec (common.outcomes) against the Lua that writes the codes and statuses."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from sessionstreams.common.outcomes import (
    APPLIED_HELD_CODE,
    DUPLICATE,
    FINAL_STATUSES,
    KEEP_MS,
    RECORD_CAP,
    RECORD_SLOTS,
    Outcome,
    is_held,
)

_LUA = resources.files("sessionstreams.common") / "lua"


def _lib() -> str:
    return (_LUA / "_lib.lua").read_text()


def test_codes_match_the_lua_table() -> None:
    """Every code of SS_CODE in _lib.lua is the code of the outcome of that name, and back."""
    table = re.search(r"local SS_CODE = \{([^}]*)\}", _lib())
    assert table is not None
    in_lua = {name: int(code) for name, code in re.findall(r"(\w+)\s*=\s*(\d+)", table[1])}
    assert in_lua == {o.value: o.code for o in Outcome}
    assert all(0 < code < RECORD_SLOTS for code in in_lua.values())


def test_record_cap_matches_the_lua() -> None:
    """RECORD_CAP is the cap the scripts trim a request record to."""
    found = re.search(r"local SS_RECORD_CAP = (\d+)", _lib())
    assert found is not None
    assert int(found[1]) == RECORD_CAP


def test_applied_held_code_matches_the_lua_and_is_no_outcome() -> None:
    """The held code is SS_APPLIED_HELD of the scripts, a free slot of the score, told apart
    from every outcome's code whatever the sequence."""
    found = re.search(r"local SS_APPLIED_HELD = (\d+)", _lib())
    assert found is not None
    assert int(found[1]) == APPLIED_HELD_CODE
    assert 0 < APPLIED_HELD_CODE < RECORD_SLOTS
    assert APPLIED_HELD_CODE not in {o.code for o in Outcome}
    assert is_held(str(float(12_345 * RECORD_SLOTS + APPLIED_HELD_CODE)).encode())
    assert not any(is_held(12_345 * RECORD_SLOTS + o.code) for o in Outcome)


def test_keep_ttl_matches_the_lua() -> None:
    """KEEP_MS is the TTL the scripts give our bookkeeping keys of a session without one."""
    found = re.search(r"local SS_KEEP_MS = (\d+)", _lib())
    assert found is not None
    assert int(found[1]) == KEEP_MS
    assert f"local SS_KEEP_TEXT = '{KEEP_MS}'" in _lib()


def test_every_status_a_script_returns_decodes() -> None:
    """Each literal status a Lua script returns or records (SS_CODE.x, 'x') is one the codec
    knows: an outcome, duplicate, or invalid:<reason>."""
    used: set[str] = set()
    recorded = re.compile(r"SS_CODE\.(\w+)")
    returned = re.compile(r"return\s*\{?\s*'(applied|duplicate|session_gone|superseded|invalid)")
    for entry in _LUA.iterdir():
        text = entry.read_text()
        used.update(recorded.findall(text))
        used.update(returned.findall(text))
    assert used, "no status found in the scripts: the pattern no longer matches them"
    for status in used:
        assert Outcome.from_status(status) is not None, status


@pytest.mark.parametrize("outcome", list(Outcome))
def test_scores_decode_whatever_the_sequence(outcome: Outcome) -> None:
    """A score seq * 8 + code decodes to its outcome for any sequence (floats from RESP too)."""
    for seq in (0, 1, 17, 2**40):
        score = seq * RECORD_SLOTS + outcome.code
        assert Outcome.from_score(score) is outcome
        assert Outcome.from_score(str(float(score)).encode()) is outcome


def test_statuses() -> None:
    """duplicate counts as applied; invalid:<reason> is INVALID; unknown text is None."""
    assert Outcome.from_status(DUPLICATE) is Outcome.APPLIED
    assert Outcome.from_status(b"applied") is Outcome.APPLIED
    assert Outcome.from_status("invalid:meta") is Outcome.INVALID
    assert Outcome.from_status("what") is None
    assert Outcome.from_score(7) is Outcome.INVALID  # an unknown code
    assert {Outcome.from_status(s) for s in FINAL_STATUSES} == {
        Outcome.APPLIED, Outcome.SESSION_GONE, Outcome.SUPERSEDED}
