"""AppendEvent and GetSession hooks: an onion chain around the built-in handler.

Hooks run in registration order and wrap each other: ``h1-before, h2-before, final,
h2-after, h1-after``. A hook that does not await ``next()`` aborts the chain and its return
value becomes the result. Hooks may replace fields of the shared context before calling next.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sessionstreams.common.gotime import GoTime
from sessionstreams.common.models import Event, Key, Session

T = TypeVar("T")


@dataclass
class AppendEventContext:
    """What an AppendEvent hook sees (and may change before calling next)."""

    session: Session
    event: Event
    key: Key


@dataclass
class GetSessionContext:
    """What a GetSession hook sees (and may change before calling next)."""

    key: Key
    num_events: int
    after: GoTime | None
    exact_window: bool = False
    wait_own_writes: bool = True


AppendEventHook = Callable[[AppendEventContext, Callable[[], Awaitable[Any]]], Awaitable[Any]]
GetSessionHook = Callable[
    [GetSessionContext, Callable[[], Awaitable[Session | None]]], Awaitable[Session | None]
]


async def run_chain(
    hooks: Sequence[Callable[..., Awaitable[Any]]],
    ctx: Any,
    final: Callable[[Any], Awaitable[T]],
) -> T:
    """Run ``hooks`` around ``final(ctx)`` in onion order."""

    async def step(i: int) -> Any:
        if i == len(hooks):
            return await final(ctx)
        return await hooks[i](ctx, lambda: step(i + 1))

    result: T = await step(0)
    return result
