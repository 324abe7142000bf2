"""Lua scripts: loaded from ``common/scripts/*.lua``, run by SHA with a NOSCRIPT fallback.

Each ``.lua`` file opens with its KEYS/ARGV contract. ``_lib.lua`` holds shared helpers and
is prepended to every script, so a script is self-contained once loaded. No value is ever
formatted into script text: everything arrives through KEYS and ARGV.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError

Arg = str | bytes | int | float

_LIB = "_lib"


@cache
def _source(name: str) -> bytes:
    folder = resources.files("common") / "scripts"
    lib = (folder / f"{_LIB}.lua").read_bytes()
    body = (folder / f"{name}.lua").read_bytes()
    return lib + b"\n" + body


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
        """The script called ``name`` (a file ``common/scripts/<name>.lua``)."""
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
                results[i] = await self.call(client, name, keys, args)
        if raise_errors:
            for result in results:
                if isinstance(result, Exception):
                    raise result
        return results
