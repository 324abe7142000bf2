"""The Agents SDK's ``Session`` behaviours, proved on our adapter and on the SDK's own sessions.

Each test runs on ``SessionStreamsSession`` in both persistence modes (``[sync]``, and
``[async]`` with a worker process applying the streamed writes) and on the SDK's reference
sessions: ``[sdk-sqlite]`` (SQLiteSession on a file) and ``[sdk-redis]`` (RedisSession on the
tests' redis-server). A subset also runs on a Redis Cluster (``[sync-cluster]``,
``[async-cluster]``, slow; the SDK's RedisSession cannot write there). Where the reference
sessions disagree, a test names the one it follows.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("agents")

import redis.asyncio as aioredis
from adapter_modes import OurBackend, against
from agents.extensions.memory import RedisSession
from agents.memory import SessionSettings, SQLiteSession

from redis_harness import RunningRedis
from sessionstreams.producer.openai_agents import SessionStreamsSession

SDK_SQLITE, SDK_REDIS = "sdk-sqlite", "sdk-redis"
REFERENCES = (SDK_SQLITE, SDK_REDIS)


@dataclass
class Impl:
    """One session implementation: sessions on one shared store, as several processes see it.

    ``session(id, **kw)`` makes a session on its own client (another process); ``owned(id)``
    one that owns its client (closing it ends the session); ``settle()`` waits until this
    test's writes are visible to other processes (async mode: applied by the workers).
    """

    name: str
    session: Callable[..., Awaitable[Any]]
    owned: Callable[[str], Awaitable[Any]]
    settle: Callable[[], Awaitable[None]]

    @property
    def ours(self) -> bool:
        return self.name not in REFERENCES


async def close(session: Any) -> None:
    """Close a session (SQLiteSession.close is synchronous)."""
    result = session.close()
    if inspect.isawaitable(result):
        await result


@pytest.fixture
async def impl(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    key_prefix: str,
    redis_server: RunningRedis,
    our_backend: Callable[..., OurBackend],
) -> AsyncIterator[Impl]:
    """The implementation named by the test's parameter (see :func:`against`)."""
    name: str = request.param
    made: list[Any] = []
    clients: list[Any] = []

    async def nothing() -> None:
        return None

    if name == SDK_SQLITE:
        path = tmp_path / "agents.db"

        async def sqlite(session_id: str = "conv", **kw: Any) -> Any:
            made.append(SQLiteSession(session_id, path, **kw))
            return made[-1]

        yield Impl(name, sqlite, sqlite, nothing)
    elif name == SDK_REDIS:
        prefix = f"{key_prefix}:agents"

        async def redis_session(session_id: str = "conv", **kw: Any) -> Any:
            client = aioredis.Redis.from_url(redis_server.url)
            clients.append(client)
            made.append(RedisSession(session_id, redis_client=client, key_prefix=prefix, **kw))
            return made[-1]

        async def redis_owned(session_id: str) -> Any:
            made.append(RedisSession.from_url(session_id, url=redis_server.url,
                                              key_prefix=prefix))
            return made[-1]

        yield Impl(name, redis_session, redis_owned, nothing)
    else:
        backend = our_backend(name, session_event_storage_limit=0)
        services: list[Any] = []

        async def ours(session_id: str = "conv", **kw: Any) -> Any:
            services.append(backend.service())
            return SessionStreamsSession(session_id, services[-1], app_name="agents",
                                         user_id="u1", **kw)

        async def ours_owned(session_id: str) -> Any:
            made.append(SessionStreamsSession(session_id, settings=backend.settings,
                                              app_name="agents", user_id="u1"))
            return made[-1]

        async def settle() -> None:
            for service in services:
                await service.flush()

        yield Impl(name, ours, ours_owned, settle)
    for session in made:
        await close(session)
    for client in clients:
        await client.aclose()


def message(role: str, text: str) -> dict[str, Any]:
    return {"role": role, "content": text}


#: One item of every kind the SDK produces or accepts as input, with unusual text.
ITEMS: list[Any] = [
    {"role": "user", "content": "Wéather in Zürich? \"quotes\" \\ <b> \u2028 😀"},
    {"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "and this picture"},
        {"type": "input_image", "detail": "auto", "image_url": "data:image/png;base64,AAAA"},
        {"type": "input_file", "file_id": "file-1", "filename": "a.pdf"}]},
    {"role": "system", "content": "Be brief."},
    {"role": "developer", "content": [{"type": "input_text", "text": "dev note"}]},
    {"type": "reasoning", "id": "rs_1", "summary": [
        {"type": "summary_text", "text": "They want the weather."}],
     "encrypted_content": "gAAAA=="},
    {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
     "arguments": '{"city":"Zürich","days":[1,2]}', "status": "completed"},
    {"type": "function_call_output", "call_id": "call_1", "output": "sunny, 21.5°C"},
    {"type": "function_call", "id": "fc_2", "call_id": "call_2",
     "name": "transfer_to_billing_agent", "arguments": "{}", "status": "completed"},
    {"type": "function_call_output", "call_id": "call_2",
     "output": '{"assistant": "billing agent"}'},
    {"type": "computer_call", "id": "cu_1", "call_id": "call_3", "status": "completed",
     "action": {"type": "click", "x": 10, "y": 20, "button": "left"},
     "pending_safety_checks": []},
    {"type": "computer_call_output", "call_id": "call_3",
     "output": {"type": "computer_screenshot", "image_url": "data:image/png;base64,BBBB"}},
    {"type": "file_search_call", "id": "fs_1", "queries": ["tariffs"], "status": "completed",
     "results": None},
    {"type": "web_search_call", "id": "ws_1", "status": "completed",
     "action": {"type": "search", "query": "weather"}},
    {"type": "image_generation_call", "id": "ig_1", "status": "completed", "result": "iVBOR"},
    {"type": "code_interpreter_call", "id": "ci_1", "code": "print(1)", "container_id": "c1",
     "outputs": [{"type": "logs", "logs": "1\n"}], "status": "completed"},
    {"type": "mcp_call", "id": "mcp_1", "server_label": "s", "name": "t", "arguments": "{}",
     "output": "ok"},
    {"type": "custom_tool_call", "call_id": "call_4", "name": "grammar", "input": "x = 1"},
    {"type": "custom_tool_call_output", "call_id": "call_4", "output": "parsed"},
    {"type": "item_reference", "id": "msg_0"},
    {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
     "content": [{"type": "output_text", "text": "It is sunny.", "annotations": [],
                  "logprobs": []},
                 {"type": "refusal", "refusal": "no"}]},
    {"role": "assistant", "content": "", "extra": {"n": 1, "f": 0.5, "b": False, "z": None}},
]


@against(*REFERENCES)
async def test_empty_session(impl: Impl) -> None:
    """A new session has no items (with or without limit), pop_item gives None and clearing
    it is fine."""
    session = await impl.session()
    assert await session.get_items() == []
    assert await session.get_items(limit=2) == []
    assert await session.pop_item() is None
    await session.clear_session()
    assert await session.get_items() == []


@against(*REFERENCES, cluster=True)
async def test_every_item_type_round_trips(impl: Impl) -> None:
    """get_items returns exactly the items added, field for field, for every item type, in
    this process and in another one."""
    session = await impl.session()
    await session.add_items(ITEMS)
    assert await session.get_items() == ITEMS
    await impl.settle()
    other = await impl.session()
    assert await other.get_items() == ITEMS


@against(*REFERENCES)
async def test_add_items_keeps_order_across_calls(impl: Impl) -> None:
    """Items of several add_items calls read back in call order; an empty list adds
    nothing."""
    session = await impl.session()
    batches = [[message("user", "a")], [], [message("assistant", "b"), message("user", "c")],
               [message("assistant", "d")]]
    for batch in batches:
        await session.add_items(batch)
    assert await session.get_items() == [item for batch in batches for item in batch]


@against(*REFERENCES)
async def test_get_items_limit(impl: Impl) -> None:
    """limit returns the newest items oldest first (0: none); without limit the session
    settings' limit applies; an explicit limit wins over it."""
    items = [message("user", str(i)) for i in range(5)]
    session = await impl.session(session_settings=SessionSettings(limit=2))
    await session.add_items(items)
    assert await session.get_items() == items[-2:]
    assert await session.get_items(limit=3) == items[-3:]
    assert await session.get_items(limit=1) == items[-1:]
    assert await session.get_items(limit=100) == items
    assert await session.get_items(limit=0) == []
    session.session_settings = SessionSettings()
    assert await session.get_items() == items


@against(SDK_REDIS)
async def test_negative_limit_returns_nothing(impl: Impl) -> None:
    """A negative limit returns no items (the SDK's SQLiteSession returns all of them)."""
    session = await impl.session()
    await session.add_items([message("user", "a")])
    assert await session.get_items(limit=-1) == []


@against(*REFERENCES)
async def test_session_settings_dict_is_coerced(impl: Impl) -> None:
    """session_settings given as a dict becomes SessionSettings (its limit applies); an
    unknown key raises TypeError."""
    session = await impl.session(session_settings={"limit": 1})
    assert isinstance(session.session_settings, SessionSettings)
    assert session.session_settings.limit == 1
    await session.add_items([message("user", "a"), message("user", "b")])
    assert await session.get_items() == [message("user", "b")]
    with pytest.raises(TypeError, match="bogus"):
        await impl.session("conv-2", session_settings={"limit": 1, "bogus": 2})


@against(*REFERENCES)
async def test_non_json_item_raises_type_error(impl: Impl) -> None:
    """add_items with an item that is not JSON raises TypeError and adds nothing of its
    batch."""
    session = await impl.session()
    await session.add_items([message("user", "kept")])
    with pytest.raises(TypeError):
        await session.add_items([message("user", "lost"), {"role": "user", "content": object()}])
    assert await session.get_items() == [message("user", "kept")]


@against(*REFERENCES)
async def test_pop_item_returns_the_newest_until_empty(impl: Impl) -> None:
    """pop_item removes and returns the newest item each time, then None."""
    session = await impl.session()
    items = ITEMS[:4]
    await session.add_items(items)
    popped = [await session.pop_item() for _ in items]
    assert popped == list(reversed(items))
    assert await session.pop_item() is None
    assert await session.get_items() == []


@against(*REFERENCES)
async def test_clear_session(impl: Impl) -> None:
    """clear_session removes this session's items only; adding afterwards starts afresh."""
    session, neighbour = await impl.session("conv"), await impl.session("conv-2")
    await session.add_items([message("user", "a")])
    await neighbour.add_items([message("user", "n")])
    await session.clear_session()
    assert await session.get_items() == []
    assert await neighbour.get_items() == [message("user", "n")]
    await session.add_items([message("user", "b")])
    assert await session.get_items() == [message("user", "b")]


@against(*REFERENCES, cluster=True)
async def test_concurrent_tasks(impl: Impl) -> None:
    """Tasks adding batches at once: every item lands once, each batch in one piece and in
    its order; tasks popping at once get distinct newest items."""
    session = await impl.session()
    batches = [[message("user", f"{t}.{i}") for i in range(3)] for t in range(5)]
    await asyncio.gather(*(session.add_items(batch) for batch in batches))
    items = await session.get_items()
    assert len(items) == 15
    starts = sorted(items.index(batch[0]) for batch in batches)
    assert starts == [0, 3, 6, 9, 12]
    for batch in batches:
        at = items.index(batch[0])
        assert items[at:at + 3] == batch
    popped = await asyncio.gather(*(session.pop_item() for _ in range(4)))
    assert sorted(p["content"] for p in popped) == sorted(i["content"] for i in items[-4:])
    assert await session.get_items() == items[:-4]


@against(*REFERENCES)
async def test_use_after_close(impl: Impl) -> None:
    """A session that owns its client is closed for good: every call raises RuntimeError."""
    session = await impl.owned("conv")
    await session.add_items([message("user", "a")])
    await close(session)
    for call in (session.get_items(), session.add_items([message("user", "b")]),
                 session.pop_item(), session.clear_session()):
        with pytest.raises(RuntimeError):
            await call


@against(SDK_REDIS)
async def test_close_keeps_a_session_on_a_shared_client(impl: Impl) -> None:
    """Closing a session that uses a client of the caller's leaves it usable."""
    session = await impl.session()
    await session.add_items([message("user", "a")])
    await close(session)
    await session.add_items([message("user", "b")])
    assert await session.get_items() == [message("user", "a"), message("user", "b")]


@against(*REFERENCES)
async def test_items_written_by_another_process(impl: Impl) -> None:
    """Two processes on one conversation see each other's items once written (applied):
    adds, pops and clears of either show in the other."""
    mine, theirs = await impl.session(), await impl.session()
    await mine.add_items(ITEMS[:3])
    await impl.settle()
    assert await theirs.get_items() == ITEMS[:3]
    await theirs.add_items(ITEMS[3:5])
    await impl.settle()
    assert await mine.get_items() == ITEMS[:5]
    assert await mine.pop_item() == ITEMS[4]
    assert await theirs.get_items() == ITEMS[:4]
    await theirs.clear_session()
    assert await mine.get_items() == []
