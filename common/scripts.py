"""Lua scripts: loaded from ``common/lua/*.lua``, run by SHA with a NOSCRIPT fallback.

Each ``.lua`` file opens with its KEYS/ARGV contract. ``_lib.lua`` holds shared helpers; the
ones a script uses (and the ones those use) are prepended to it, so a script is self-contained
once loaded and pays only for the helpers it needs (defining them runs on every call). No value
is ever formatted into script text: everything arrives through KEYS and ARGV.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError, ResponseError

Arg = str | bytes | int | float

_LIB = "_lib"


#: A helper's name: every top-level definition of ``_lib.lua`` is ``ss_*`` or ``SS_*``.
_HELPER = re.compile(rb"\b(?:ss|SS)_\w+")
#: A top-level definition: ``local function NAME`` or ``local NAME``.
_DEFINITION = re.compile(rb"^local\s+(?:function\s+)?((?:ss|SS)_\w+)")


@cache
def _helpers() -> tuple[tuple[bytes, bytes], ...]:
    """``_lib.lua`` as (name, text) definitions in file order, each with its leading comment."""
    text = (resources.files("sessionstreams.common") / "lua" / f"{_LIB}.lua").read_bytes()
    chunks: list[tuple[bytes, bytes]] = []
    comment: list[bytes] = []
    for line in text.splitlines(keepends=True):
        match = _DEFINITION.match(line)
        if match:
            chunks.append((match.group(1), b"".join(comment) + line))
            comment = []
        elif line.startswith(b"--") or not line.strip():
            comment = [] if not line.strip() else [*comment, line]
        elif chunks:
            name, body = chunks[-1]
            chunks[-1] = (name, body + b"".join(comment) + line)
            comment = []
        else:
            raise ValueError(f"{_LIB}.lua: code before the first definition: {line!r}")
    return tuple(chunks)


def _needed(body: bytes) -> list[bytes]:
    """The helper definitions ``body`` uses, directly or through other helpers, in file order."""
    chunks = _helpers()
    wanted = set(_HELPER.findall(body))
    for name, text in reversed(chunks):  # a helper only uses helpers defined before it
        if name in wanted:
            wanted.update(_HELPER.findall(text))
    return [text for name, text in chunks if name in wanted]


@cache
def _source(name: str) -> bytes:
    body = (resources.files("sessionstreams.common") / "lua" / f"{name}.lua").read_bytes()
    return b"".join(_needed(body)) + b"\n" + body


class Script:
    """One Lua script: its text and SHA1."""

    __slots__ = ("name", "sha", "text")

    def __init__(self, name: str) -> None:
        self.name = name
        self.text = _source(name)
        self.sha = hashlib.sha1(self.text).hexdigest()


class Scripts:
    """The scripts of one service, run on a client or queued on a pipeline.

    Args:
        disable_cache: run every script with EVAL (no SHA cache on the server).
    """

    def __init__(self, *, disable_cache: bool = False) -> None:
        self.disable_cache = disable_cache
        self._scripts: dict[str, Script] = {}

    def get(self, name: str) -> Script:
        """The script called ``name`` (a file ``common/lua/<name>.lua``)."""
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = Script(name)
        return script

    def command(self, name: str, keys: Sequence[str], args: Sequence[Arg]) -> list[Any]:
        """The raw ``EVALSHA`` (or ``EVAL``) command of a script call."""
        script = self.get(name)
        head: Arg = script.text if self.disable_cache else script.sha
        verb = "EVAL" if self.disable_cache else "EVALSHA"
        return [verb, head, len(keys), *keys, *args]

    async def call(self, client: Any, name: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """Run a script; on NOSCRIPT load it and run it again."""
        command = self.command(name, keys, args)
        try:
            return await client.execute_command(*command)
        except NoScriptError:
            await client.script_load(self.get(name).text)
            return await client.execute_command(*command)

    def queue(self, pipe: Any, name: str, keys: Sequence[str], args: Sequence[Arg]) -> None:
        """Queue a script call on a (non-transactional) pipeline as raw EVALSHA."""
        pipe.execute_command(*self.command(name, keys, args))

    async def run_pipeline(
        self, client: Any, calls: Sequence[tuple[Any, ...]], *, raise_errors: bool = True
    ) -> list[Any]:
        """Run ``calls`` in one non-transactional pipeline and return their results in order.

        Each call is ``("script", name, keys, args)`` or ``("cmd", *command)``. Calls whose
        script was missing on the server are loaded and re-run one by one. Any other error
        is raised after the whole pipeline ran, or, with ``raise_errors=False``, left in its
        place in the result list.
        """
        if len(calls) == 1:  # one call: no pipeline object, the same reply and errors
            return [await self._run_one(client, calls[0], raise_errors)]
        pipe = client.pipeline(transaction=False)
        for call in calls:
            if call[0] == "script":
                self.queue(pipe, call[1], call[2], call[3])
            else:
                pipe.execute_command(*call[1:])
        results: list[Any] = await pipe.execute(raise_on_error=False)
        for i, result in enumerate(results):
            if isinstance(result, NoScriptError) and calls[i][0] == "script":
                _, name, keys, args = calls[i]
                try:
                    results[i] = await self.call(client, name, keys, args)
                except ResponseError as exc:  # the script's own error, like any other call's
                    if raise_errors:
                        raise
                    results[i] = exc
        if raise_errors:
            for result in results:
                if isinstance(result, Exception):
                    raise result
        return results

    async def _run_one(self, client: Any, call: tuple[Any, ...], raise_errors: bool) -> Any:
        try:
            if call[0] == "script":
                return await self.call(client, call[1], call[2], call[3])
            return await client.execute_command(*call[1:])
        except ResponseError as exc:
            if raise_errors:
                raise
            return exc
