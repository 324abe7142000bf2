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
