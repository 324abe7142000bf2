"""A short demonstration: a few sessions with a conversation each, read back and listed."""

from __future__ import annotations

import uuid

from common.models import Event, Key, UserKey
from common.settings import Settings


async def run_demo(settings: Settings, *, sessions: int = 2, turns: int = 3) -> int:
    """Create ``sessions`` sessions of ``turns`` user/assistant turns and print them."""
    from producer import SessionService

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
