"""Shared pieces of the admin tools (index rebuild, migrate): progress bar and fault hook."""

from __future__ import annotations

import inspect
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TextIO

from sessionstreams.common.errors import SessionStoreError
from sessionstreams.common.models import Key

#: ``<point>:<n>``: raise :class:`InjectedFault` the n-th time a tool reaches ``point``.
FAULT_ENV = "SESSIONSTREAMS_ADMIN_FAULT"

#: Called at each named point with the session concerned; may raise to stop the tool, or
#: return an awaitable (awaited before the tool goes on: a test writes concurrently there).
FaultHook = Callable[[str, Key], Awaitable[None] | None]


async def reach(hook: FaultHook | None, point: str, key: Key) -> None:
    """Call ``hook`` at ``point`` (awaiting what it returns, if anything)."""
    if hook is not None:
        result = hook(point, key)
        if inspect.isawaitable(result):
            await result


class InjectedFault(SessionStoreError):
    """Raised by the fault hook (tests and drills: a crash at a chosen point)."""


def fault_from_env(environ: dict[str, str] | None = None) -> FaultHook | None:
    """The fault hook ``SESSIONSTREAMS_ADMIN_FAULT`` asks for, or None.

    Raises:
        InjectedFault: (from the returned hook) at the chosen point and count.
    """
    text = (environ if environ is not None else dict(os.environ)).get(FAULT_ENV, "").strip()
    if not text:
        return None
    point, _, count = text.partition(":")
    return stop_after(point, int(count or "1"))


def stop_after(point: str, count: int) -> FaultHook:
    """A hook raising :class:`InjectedFault` the ``count``-th time ``point`` is reached."""
    seen = 0

    def hook(reached: str, key: Key) -> None:
        nonlocal seen
        if reached != point:
            return
        seen += 1
        if seen >= count:
            raise InjectedFault(f"injected fault at {point} #{seen} ({key})")

    return hook


class Progress:
    """A one-line text progress bar on stderr (only redrawn every 0.2 s and when a TTY).

    Args:
        label: what is counted.
        total: the expected count, or None when unknown (then the count and rate are shown).
        stream: where to draw (default stderr).
    """

    def __init__(self, label: str, total: int | None, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self._start = time.monotonic()
        self._drawn = 0.0
        self._live = self.stream.isatty()

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more items and redraw when due."""
        self.done += n
        now = time.monotonic()
        if self._live and now - self._drawn >= 0.2:
            self._drawn = now
            self._draw(end="\r")

    def close(self) -> None:
        """Draw the final state on its own line."""
        self._draw(end="\n")

    def _draw(self, end: str) -> None:
        rate = self.done / max(time.monotonic() - self._start, 1e-9)
        if self.total:
            filled = int(30 * min(self.done, self.total) / self.total)
            bar = "#" * filled + "." * (30 - filled)
            text = f"{self.label} [{bar}] {self.done}/{self.total}"
        else:
            text = f"{self.label} {self.done}"
        self.stream.write(f"{text} ({rate:.0f}/s){end}")
        self.stream.flush()
