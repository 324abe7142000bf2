"""Shared pieces of the admin tools (index rebuild, migrate): progress bar and fault hook."""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TextIO

from tqdm import tqdm

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
    """Progress of an admin tool on stderr: count, rate and, once the total is known, the
    percentage and the time left (a tqdm bar, drawn only on a terminal).

    Args:
        label: what is counted.
        total: the expected count, or None until it is known (then set :attr:`total`).
        stream: where to draw (default stderr).
        unit: the name of one item.
        enabled: draw even when ``stream`` is not a terminal (True) or never (False).
    """

    def __init__(self, label: str, total: int | None = None, stream: TextIO | None = None,
                 *, unit: str = "session", enabled: bool | None = None) -> None:
        self._bar = tqdm(total=total, desc=label, unit=f" {unit}s", unit_scale=False,
                         file=stream if stream is not None else sys.stderr,
                         disable=None if enabled is None else not enabled,
                         mininterval=0.2, dynamic_ncols=True, leave=True)

    @property
    def total(self) -> int | None:
        """The expected count (None while unknown)."""
        total = self._bar.total
        return None if total is None else int(total)

    @total.setter
    def total(self, value: int | None) -> None:
        self._bar.total = value
        self._bar.refresh()

    @property
    def done(self) -> int:
        """How many items were counted so far."""
        return int(self._bar.n)

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more items (the bar is redrawn at most every 0.2 s)."""
        self._bar.update(n)

    def close(self) -> None:
        """Draw the final state on its own line."""
        self._bar.close()
