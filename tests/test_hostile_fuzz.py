"""Random events, ids, state values and track events against both persistence modes.

For every example, each mode (synchronous; asynchronous with a worker in this process) must
either refuse the write with one of our errors, writing and acknowledging nothing, or store
it so that it reads back equal; and both modes must give the same verdict.
"""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redis_harness import RunningRedis
from sessionstreams.common.errors import SessionStoreError
from sessionstreams.common.gotime import GoTime
from sessionstreams.common.models import (
    Event,
    FunctionDef,
    Key,
    Session,
    ToolCall,
    TrackEvent,
    Usage,
)
from sessionstreams.common.settings import Settings
from sessionstreams.common.shards import ShardKeys
from sessionstreams.producer import SessionService
from sessionstreams.workers.runner import Worker

pytestmark = pytest.mark.slow

SHARDS = 2
EXAMPLES = 150

# -- strategies -------------------------------------------------------------------------------
def pick(*choices: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """One of ``choices``, each about as likely (a repeated choice weighs more). Hypothesis's
    ``one_of`` flattens nested unions and leans to some branches, which let seven kinds of
    junk outweigh the valid values beside them."""
    return st.sampled_from(range(len(choices))).flatmap(lambda i: choices[i])


any_text = st.text(st.characters(exclude_categories=()), max_size=8)  # lone surrogates too
weird = pick(st.integers(), st.binary(max_size=6), st.floats(), st.booleans(), st.none(),
             any_text, st.lists(st.integers(), max_size=2))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=3),
    max_leaves=8,
)
json_bytes = json_values.map(lambda v: json.dumps(v).encode())
usual_names = st.text("abcxyzé", min_size=1, max_size=4)
names = pick(usual_names, usual_names, st.text("abc:{}é", max_size=4))
usual_times = st.builds(GoTime, st.integers(-(2**62), 2**62),
                        st.just(0) | st.integers(-1439, 1439).map(lambda minutes: minutes * 60))
odd_times = st.builds(GoTime, st.integers(-(2**66), 2**66), st.integers(-100_000, 100_000))
times = pick(usual_times, usual_times, usual_times, odd_times)
plain_keys = st.text(max_size=4).filter(lambda k: not k.startswith(("app:", "user:", "temp:")))
state_keys = pick(plain_keys, plain_keys, plain_keys,
                       st.sampled_from(["", "app:", "user:", "temp:"]),
                       names.map(lambda k: f"app:{k}"), names.map(lambda k: f"user:{k}"),
                       names.map(lambda k: f"temp:{k}"), any_text)
state_values = pick(st.binary(max_size=6), st.binary(max_size=6), st.text(max_size=6),
                         st.none(), any_text, st.integers())
states = st.dictionaries(state_keys, state_values, max_size=3)
tool_calls = st.lists(st.builds(
    ToolCall, type=st.just("function"),
    function=st.builds(FunctionDef, name=st.text(max_size=4),
                       arguments=st.text(max_size=8) | st.binary(max_size=6)),
    extra_fields=st.none() | st.dictionaries(st.text(max_size=4), json_values | weird,
                                             max_size=2),
), max_size=2)

MUTATIONS: dict[str, st.SearchStrategy[Any]] = {
    "id": pick(st.text(max_size=6), weird),
    "author": pick(st.text(max_size=6), weird),
    "request_id": pick(st.text(max_size=6), weird),
    "branch": pick(any_text, weird),
    "timestamp": pick(times, times, weird),
    "requires_completion": pick(st.booleans(), weird),
    "version": pick(st.integers(), weird),
    "state_delta": st.none() | states,
    "extensions": st.none() | st.dictionaries(st.text(max_size=4),
                                              json_bytes | st.binary(max_size=6) | st.none(),
                                              max_size=2),
    "long_running_tool_ids": pick(st.none() | st.sets(st.text(max_size=4), max_size=3), weird),
    "response": st.none(),
    "response.created": pick(st.integers(), weird),
    "response.is_partial": st.booleans(),
    "response.usage": st.none() | st.builds(Usage, prompt_tokens=st.integers()),
    "response.choices.message.content": pick(any_text, weird),
    "response.choices.message.role": pick(st.sampled_from(["user", "assistant", "tool", ""]),
                                          weird),
    "response.choices.message.tool_calls": st.none() | tool_calls,
}


def _set(event: Event, path: str, value: Any) -> None:
    target: Any = event
    *head, last = path.split(".")
    for part in head:
        target = getattr(target, part)
        if target is None:
            return
        if isinstance(target, list):
            target = target[0]
    setattr(target, last, value)


@st.composite
def events(draw: st.DrawFn, index: int = 0) -> Event:
    """A chat message with up to three fields replaced by anything."""
    event = Event.message(draw(st.sampled_from(["user", "assistant"])), draw(st.text(max_size=8)),
                          state_delta=draw(st.none() | states))
    for path in draw(st.lists(st.sampled_from(sorted(MUTATIONS)), max_size=3, unique=True)):
        _set(event, path, draw(MUTATIONS[path]))
    if type(event.id) is str:
        event.id = f"{event.id}-{index}"  # distinct ids: a repeated id is a no-op by design
    return event


track_events = st.builds(
    TrackEvent, track=pick(usual_names, usual_names, names, weird),
    payload=pick(json_bytes, json_bytes, json_bytes, st.binary(max_size=6), st.none()),
    timestamp=pick(usual_times, usual_times, times, weird),
)
operations = pick(
    st.tuples(st.just("events"), st.integers(1, 3).flatmap(
        lambda n: st.tuples(*(events(i) for i in range(n))))),
    st.tuples(st.just("track"), track_events),
    st.tuples(st.just("state"), st.dictionaries(plain_keys, st.binary(max_size=6), max_size=3)
              | states),
    st.tuples(st.just("create"), st.tuples(pick(names, names, any_text),
                                           pick(names, st.just(""), any_text), states)),
)


# -- one mode -----------------------------------------------------------------------------------
class Mode:
    """One service and what tells whether it wrote anything."""

    def __init__(self, svc: SessionService) -> None:
        self.svc = svc

    async def snapshot(self) -> dict[bytes, Any]:
        """Every data key of the test app (DUMP) and each shard's last generated entry id:
        worker bookkeeping (heartbeats, acks, trims) changes on its own and is left out."""
        client = self.svc.client
        out: dict[bytes, Any] = {}
        async for name in client.scan_iter(match=f"{self.svc.keys.prefix}:*", count=1000):
            if b"app" in name:
                out[name] = await client.dump(name)
        for shard in range(SHARDS):
            stream = ShardKeys(self.svc.settings.key_prefix, shard, SHARDS).stream
            if await client.exists(stream):
                out[stream.encode()] = (await client.xinfo_stream(stream))["last-generated-id"]
        return out

    async def run(self, session: Session, op: str, arg: Any) -> tuple[str, Any]:
        """The verdict ('ok' or the error class) and what to check afterwards."""
        svc = self.svc
        try:
            if op == "events":
                receipts = await svc.append_events(session, list(arg))
            elif op == "track":
                receipts = [await svc.append_track_event(session, arg)]
            elif op == "state":
                receipts = [await svc.update_session_state(session.key, arg)]
            else:
                user, sid, state = arg
                created = await svc.create_session(Key("app", user, sid), state=state)
                return "ok", created
        except SessionStoreError as exc:
            return type(exc).__name__, None
        for receipt in receipts:
            assert await svc.wait_persisted(receipt, timeout=20) == "applied"
        return "ok", None


def stored_as(key: str, value: Any) -> bytes | None:
    """How a state value reads back: str as UTF-8; nil stays nil in the session state and is
    an empty field in the app and user state."""
    if isinstance(value, str):
        return value.encode()
    if value is None and key.startswith(("app:", "user:")):
        return b""
    return value


def expect_state(got: Session, state: dict[str, Any]) -> None:
    for k, v in state.items():
        if not k.startswith("temp:"):
            assert got.state[k] == stored_as(k, v), (k, got.state.get(k), v)


async def check_stored(svc: SessionService, session: Session, op: str, arg: Any,
                       created: Session | None) -> None:
    """What an accepted write stored reads back equal."""
    if op == "create":
        assert created is not None
        got = await svc.get_session(created.key)
        assert got is not None
        expect_state(got, arg[2])
        return
    got = await svc.get_session(session.key, num_events=1000, exact_window=True)
    assert got is not None
    if op == "events":
        stored = {e.id: e.to_json() for e in got.events}
        applied: dict[str, Any] = {}
        for event in arg:
            if event.is_partial:
                continue  # changes nothing
            kept = {k: v for k, v in (event.state_delta or {}).items()
                    if not k.startswith("temp:")}
            if event.is_storable():
                want = msgspec.structs.replace(event, state_delta=kept or None).to_json()
                assert stored.get(event.id) == want, (event.id, stored.get(event.id), want)
            applied.update(kept)  # the later event's value wins
        expect_state(got, applied)
    elif op == "track":
        tracks = await svc.get_track_events(session.key, arg.track)
        assert [e.to_json() for e in tracks.events or []] == [arg.to_json()]
    else:
        expect_state(got, arg)


# -- the test -------------------------------------------------------------------------------------
@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop of the test's own: Hypothesis runs the examples synchronously."""
    event_loop = asyncio.new_event_loop()
    try:
        yield event_loop
    finally:
        event_loop.close()


def test_random_writes_get_one_verdict_and_read_back_equal(
    redis_server: RunningRedis, key_prefix: str, loop: asyncio.AbstractEventLoop
) -> None:
    """Random writes: a typed refusal writing nothing, or a read-back equal; same in both modes."""
    base = {"url": redis_server.url, "async_persister_num": SHARDS, "block_ms": 50,
            "worker_linger_ms": 0, "lease_ttl_s": 5.0, "heartbeat_interval_s": 0.5,
            "read_your_writes_wait_s": 20.0}
    sync = Mode(SessionService(Settings(key_prefix=f"{key_prefix}s", **base)))
    streamed = Settings(key_prefix=f"{key_prefix}a", enable_async_persist=True, **base)
    async_mode = Mode(SessionService(streamed))
    worker = Worker(streamed)
    worker_task = loop.create_task(worker.run())
    seen: Counter[tuple[str, bool]] = Counter()  # (operation, accepted) -> examples

    async def example(op: str, arg: Any) -> None:
        if op == "create" and isinstance(arg[1], str) and arg[1]:
            arg = (arg[0], f"{arg[1]}-{uuid.uuid4().hex[:6]}", arg[2])  # a new session
        verdicts = []
        for mode in (sync, async_mode):
            session = await mode.svc.create_session(Key("app", "u", uuid.uuid4().hex))
            mine = copy.deepcopy(arg)  # appends give ids and normalise deltas in place
            before = await mode.snapshot()
            verdict, created = await mode.run(session, op, mine)
            if verdict == "ok":
                await check_stored(mode.svc, session, op, mine, created)
            else:
                assert await mode.snapshot() == before, (verdict, op)
            verdicts.append(verdict)
        assert verdicts[0] == verdicts[1], (op, verdicts)
        seen[op, verdicts[0] == "ok"] += 1

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(operations)
    def each(operation: tuple[str, Any]) -> None:
        loop.run_until_complete(example(*operation))

    try:
        each()
        # The strategies reach both sides of the verdict for every kind of write.
        for op in ("events", "track", "state", "create"):
            assert seen[op, True], dict(seen)
            assert seen[op, False], dict(seen)
    finally:
        worker.stopping.set()
        loop.run_until_complete(asyncio.wait_for(worker_task, 30))
        for mode in (sync, async_mode):
            loop.run_until_complete(mode.svc.close(timeout=5))
