"""A short demonstration: a few sessions with a conversation each, read back and listed."""

from __future__ import annotations

import argparse
import asyncio
import uuid
from collections.abc import Callable
from typing import Any

from sessionstreams.common.models import Event, Key, UserKey
from sessionstreams.common.settings import Settings


async def run_demo(settings: Settings, *, sessions: int = 2, turns: int = 3) -> int:
    """Create ``sessions`` sessions of ``turns`` user/assistant turns and print them."""
    from sessionstreams.producer import SessionService

    user = f"demo-{uuid.uuid4().hex[:6]}"
    async with SessionService(settings) as svc:
        await svc.update_app_state("demo", {"greeting": b"hello"})
        for n in range(sessions):
            s = await svc.create_session(Key("demo", user, ""), {"topic": f"t{n}".encode()})
            for t in range(turns):
                await svc.append_event(s, Event.message("user", f"question {t}",
                                                        state_delta={"turn": str(t).encode()}))
                await svc.append_event(s, Event.message("assistant", f"answer {t}"))
            got = await svc.get_session(s.key, num_events=4)
            assert got is not None
            turn, greeting = got.state.get("turn"), got.state.get("app:greeting")
            print(f"session {got.id}: {len(got.events)} newest events, "
                  f"state turn={turn!r} app:greeting={greeting!r}")
            for e in got.events:
                choice = e.response.choices[0] if e.response and e.response.choices else None
                text = choice.message.content if choice else ""
                role = choice.message.role if choice else "?"
                print(f"  {e.timestamp.to_text()}  {role:9} {text}")
        listed = await svc.list_sessions(UserKey("demo", user), only_meta=True)
        print(f"user {user} has {len(listed)} sessions: {', '.join(s.id for s in listed)}")
        for s in listed:
            await svc.delete_session(s.key)
    return 0


def register(sub: Any, settings_of: Callable[[argparse.Namespace], Settings]) -> None:
    """Add ``sessionstreams demo`` (an entry point of the ``sessionstreams.commands`` group)."""
    demo = sub.add_parser("demo", help="create sessions, append events and read them back")
    demo.add_argument("--sessions", type=int, default=2, help="sessions to create (default 2)")
    demo.add_argument("--turns", type=int, default=3,
                      help="user/assistant turns per session (default 3)")

    def run(args: argparse.Namespace) -> int:
        return asyncio.run(run_demo(settings_of(args), sessions=args.sessions, turns=args.turns))

    demo.set_defaults(func=run)
