"""Script assembly: each script carries exactly the ``_lib.lua`` helpers it needs."""

from __future__ import annotations

import re
from importlib import resources

import pytest
import redis

from redis_harness import RunningRedis
from sessionstreams.common import scripts

_FOLDER = resources.files("sessionstreams.common") / "lua"
_NAMES = sorted(p.name[:-4] for p in _FOLDER.iterdir()
                if p.name.endswith(".lua") and p.name != "_lib.lua")
_USE = re.compile(rb"\b(?:ss|SS)_\w+")
_DEFINE = re.compile(rb"^local\s+(?:function\s+)?((?:ss|SS)_\w+)", re.M)


def _code(text: bytes) -> list[bytes]:
    return [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith(b"--")]


def test_the_library_splits_into_definitions_without_losing_a_line() -> None:
    lib = (_FOLDER / "_lib.lua").read_bytes()
    chunks = scripts._helpers()
    assert [name for name, _ in chunks] == _DEFINE.findall(lib)
    assert _code(b"".join(text for _, text in chunks)) == _code(lib)


@pytest.mark.parametrize("name", _NAMES)
def test_a_script_defines_every_helper_it_uses_and_no_other(name: str) -> None:
    source = scripts._source(name)
    body = (_FOLDER / f"{name}.lua").read_bytes()
    defined = _DEFINE.findall(source)
    assert len(defined) == len(set(defined)), "a helper defined twice"
    assert set(_USE.findall(source)) <= set(defined)
    # Nothing the body does not reach: every defined helper is used by the body or by a
    # helper that is itself reached.
    reached = set(_USE.findall(body))
    for helper, text in reversed(scripts._helpers()):
        if helper in reached:
            reached.update(_USE.findall(text))
    assert set(defined) <= reached
    assert source.endswith(body)


def test_stream_add_carries_no_helper() -> None:
    assert _DEFINE.findall(scripts._source("stream_add")) == []


def test_every_script_compiles_on_the_server(redis_server: RunningRedis) -> None:
    client = redis.Redis(host=redis_server.host, port=redis_server.port)
    try:
        for name in _NAMES:
            script = scripts.Script(name)
            assert client.script_load(script.text) == script.sha
    finally:
        client.close()


# Go's Time.UnmarshalJSON accepts the first group and refuses the second.
_GO_TIMES = ["2024-01-01T00:00:00Z", "2024-01-01T00:00:00.123456789Z", "2024-01-01T00:00:00,5Z",
             "2024-02-29T1:02:03,5+08:00", "2024-01-01T00:00:00.5-05:30", "0001-01-01T00:00:00Z",
             "2024-01-01T00:00:00+24:00"]
_NOT_GO_TIMES = ["2024-01-01T00:00:00.Z", "2024-01-01T00:00:00Zjunk", "2024-01-01T00:00:00",
                 "2024-01-01T00:00:00.5", "2023-02-29T00:00:00Z", "2024-13-01T00:00:00Z",
                 "2024-01-01T24:00:00Z", "2024-01-01T00:00:00+01:61", "2024-01-01T00:00:00.1Z ",
                 "yesterday", ""]


def test_the_time_check_accepts_what_go_reads(redis_server: RunningRedis) -> None:
    """ss_valid_time accepts the time texts Go reads and refuses the others."""
    body = b"local out = {}\nfor i = 1, #ARGV do out[i] = ss_valid_time(ARGV[i]) and 1 or 0 end\n" \
           b"return out\n"
    text = b"".join(scripts._needed(body)) + body
    client = redis.Redis(host=redis_server.host, port=redis_server.port)
    try:
        got = client.eval(text, 0, *_GO_TIMES, *_NOT_GO_TIMES)
    finally:
        client.close()
    assert got == [1] * len(_GO_TIMES) + [0] * len(_NOT_GO_TIMES)
