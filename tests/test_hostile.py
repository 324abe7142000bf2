"""Hostile input and rare faults against a real redis-server: no acknowledged write lost, no
foreign data read, bad input refused with our own errors and nothing written.

Each test names the defect it guards against; servers that a test reconfigures, pauses or
restarts are its own (``start_redis_server`` in ``tmp_path``), never the shared one.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import math
import re
import signal
import time
import urllib.parse

import pytest

from redis_harness import start_redis_server
from sessionstreams.common.connection import redact_url
from sessionstreams.common.errors import (
    ConfigError,
    CorruptDataError,
    DecodeError,
    InvalidArgumentError,
    InvalidKeyError,
    OutOfMemoryError,
    PersistLostError,
    PersistTimeoutError,
    SessionNotFoundError,
    SessionStoreError,
    StoreTimeoutError,
)
from sessionstreams.common.gotime import GoTime
from sessionstreams.common.models import (
    Event,
    FunctionDef,
    Key,
    Logprobs,
    Session,
    Summary,
    TokenLogprob,
    ToolCall,
    TrackEvent,
    UserKey,
)
from sessionstreams.common.outcomes import KEEP_MS, RECORD_CAP
from sessionstreams.common.settings import CompatMode, Settings
from sessionstreams.producer import SessionService
from sessionstreams.workers.runner import Worker

# -- 1. eviction ---------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["volatile-lru", "volatile-lfu", "volatile-random",
                                    "volatile-ttl"])
async def test_volatile_eviction_policy_is_refused(tmp_path, policy) -> None:
    """Producers and workers refuse a volatile-* policy, naming it (it evicts keys with a TTL)."""
    server = start_redis_server(tmp_path, ("--maxmemory-policy", policy))
    settings = Settings(url=server.url, enable_async_persist=True, async_persister_num=2)
    try:
        svc = SessionService(settings)
        try:
            with pytest.raises(ConfigError, match=policy) as info:
                await svc.start()
            assert "noeviction" in str(info.value)
        finally:
            await svc.close()
        with pytest.raises(ConfigError, match=policy):
            await Worker(settings).run()
    finally:
        server.stop()


# -- 2. ids that would share keys ----------------------------------------------------------


async def test_legacy_layout_refuses_user_ids_with_colon(make_service, redis_client) -> None:
    """Legacy-layout modes refuse user 'alice:x' (sharing keys with alice's 'x:1') on writes."""
    writer = await make_service(compat_mode=CompatMode.TRANSITION)  # creates legacy sessions
    alice = await writer.create_session(Key("app", "alice", "x:1"))
    await writer.append_event(alice, Event.message("user", "mine"))
    events_key = writer.keys.legacy_events(alice.key)
    assert await redis_client.zcard(events_key) == 1
    intruder = Key("app", "alice:x", "1")
    assert writer.keys.legacy_events(intruder) == events_key  # the collision itself
    for mode in (CompatMode.LEGACY, CompatMode.TRANSITION):
        svc = await make_service(compat_mode=mode)
        with pytest.raises(InvalidKeyError, match="alice:x"):
            await svc.delete_session(intruder)
        with pytest.raises(InvalidKeyError, match="':'"):
            await svc.create_session(intruder)
        with pytest.raises(InvalidKeyError):
            await svc.create_session(Key("app", "alice:x", ""))
        session = Session(id="1", app_name="app", user_id="alice:x")
        with pytest.raises(InvalidKeyError):
            await svc.append_event(session, Event.message("user", "x"))
        with pytest.raises(InvalidKeyError):
            await svc.update_session_state(intruder, {"k": b"v"})
        with pytest.raises(InvalidKeyError):
            await svc.trim_conversations(intruder)
    assert await redis_client.zcard(events_key) == 1
    got = await writer.get_session(alice.key)
    assert got is not None
    assert [e.id for e in got.events] == [e.id for e in alice.events]


async def test_hashidx_user_ids_with_colon_stay_usable_in_none_mode(make_service) -> None:
    """NONE mode (HashIdx, user inside its hash tag) accepts ':' in user ids."""
    svc = await make_service(compat_mode=CompatMode.NONE)
    s = await svc.create_session(Key("app", "alice:x", "1"))
    await svc.append_event(s, Event.message("user", "hi"))
    got = await svc.get_session(s.key)
    assert got is not None
    assert len(got.events) == 1
    await svc.delete_session(s.key)


@pytest.mark.parametrize("mode", list(CompatMode))
async def test_track_names_with_colon_are_refused(make_service, redis_client, mode) -> None:
    """A track name with ':' (its keys end in <sid>:<track>) is refused; nothing is written."""
    svc = await make_service(compat_mode=mode)
    s = await svc.create_session(Key("app", "u", "s"))
    before = await redis_client.keys(f"{svc.keys.prefix}:*")
    with pytest.raises(InvalidKeyError, match="x:t"):
        await svc.append_track_event(s, TrackEvent(track="x:t", payload=b"1",
                                                   timestamp=GoTime.now()))
    assert sorted(await redis_client.keys(f"{svc.keys.prefix}:*")) == sorted(before)
    assert s.tracks is None
    assert "tracks" not in s.state


async def test_colliding_ids_written_by_go_stay_readable(make_service, redis_client) -> None:
    """Data another writer stored under such ids is still read: the rule only refuses writes."""
    svc = await make_service(compat_mode=CompatMode.LEGACY)
    key = Key("app", "bob:x", "1")
    now = GoTime.now().to_text()
    doc = (b'{"id":"1","state":{},"createdAt":"' + now.encode() + b'","updatedAt":"'
           + now.encode() + b'"}')
    await redis_client.hset(svc.keys.legacy_sessions(key), "1", doc)
    event = Event.message("user", "from go")
    await redis_client.zadd(svc.keys.legacy_events(key), {event.to_json(): 1})
    track = TrackEvent(track="a:b", payload=b"1", timestamp=GoTime.now())
    await redis_client.zadd(svc.keys.legacy_track(key, "a:b"), {track.to_json(): 1})
    got = await svc.get_session(key)
    assert got is not None
    assert [e.id for e in got.events] == [event.id]
    tracks = await svc.get_track_events(key, "a:b")
    assert tracks.events == [track]


# -- helpers ------------------------------------------------------------------------------------


async def snapshot(client, prefix: str) -> dict[bytes, tuple[bytes, bool]]:
    """Every key under ``prefix``: its DUMP and whether it has a TTL."""
    out: dict[bytes, tuple[bytes, bool]] = {}
    async for name in client.scan_iter(match=f"{prefix}:*", count=500):
        dumped = await client.dump(name)
        if dumped is not None:
            out[name] = (dumped, await client.pttl(name) > 0)
    return out


MODES = [pytest.param(False, id="sync"), pytest.param(True, id="async")]


def message(text: str = "hi", **delta: bytes) -> Event:
    return Event.message("user", text, state_delta=delta or None)


def with_field(event: Event, path: str, value: object) -> Event:
    """``event`` with one (dotted) attribute replaced, bypassing any check."""
    target: object = event
    *head, last = path.split(".")
    for part in head:
        target = getattr(target, part)
        if isinstance(target, list):
            target = target[0]
    setattr(target, last, value)
    return event


def deep_list(levels: int) -> list[object]:
    root: list[object] = []
    cur = root
    for _ in range(levels - 1):
        nxt: list[object] = []
        cur.append(nxt)
        cur = nxt
    return root


# -- 3, 5, 6, 12. what will be encoded is checked first ------------------------------------


BAD_EVENTS = {
    "int id": lambda: with_field(message(), "id", 7),
    "bytes author": lambda: with_field(message(), "author", b"bob"),
    "bytes content": lambda: with_field(message(), "response.choices.message.content", b"x"),
    "str timestamp": lambda: with_field(message(), "timestamp", "2020-01-01T00:00:00Z"),
    "int bool": lambda: with_field(message(), "requires_completion", 1),
    "non-JSON extension": lambda: with_field(message(), "extensions", {"x": b"not json"}),
    "NaN logprob": lambda: with_field(
        message(), "response.choices.logprobs",
        Logprobs(content=[TokenLogprob(token="a", logprob=math.nan)])),
    "inf extra field": lambda: with_field(
        message(), "response.choices.message.tool_calls",
        [ToolCall(function=FunctionDef(name="f"), extra_fields={"x": math.inf})]),
    "deep extra field": lambda: with_field(
        message(), "response.choices.message.tool_calls",
        [ToolCall(function=FunctionDef(name="f"), extra_fields={"x": deep_list(2000)})]),
    "deep extension": lambda: with_field(message(), "extensions", {"x": b"[" * 3000 + b"]" * 3000}),
    "lone surrogate": lambda: message("a\ud800b"),
    "surrogate delta key": lambda: Event.message("user", "x", state_delta={"a\udc00": b"1"}),
    "empty delta key": lambda: message(**{"": b"1"}),
    "year 10000": lambda: with_field(message(), "timestamp", GoTime(253402300800 * 10**9)),
    "dict response": lambda: with_field(message(), "response", {"object": "x"}),
    "huge created": lambda: with_field(message(), "response.created", 1 << 70),
}


@pytest.mark.parametrize("async_mode", MODES)
@pytest.mark.parametrize("case", list(BAD_EVENTS))
async def test_bad_event_is_refused_with_our_error_and_writes_nothing(
    make_service, redis_client, async_mode, case
) -> None:
    """A badly typed event gets our error in both modes; nothing written or acknowledged."""
    svc = await make_service(enable_async_persist=async_mode, read_your_writes_wait_s=1)
    s = await svc.create_session(Key("app", "u", "s"))
    before = await snapshot(redis_client, svc.keys.prefix)
    with pytest.raises((InvalidArgumentError, InvalidKeyError)):
        await svc.append_events(s, [message("fine"), BAD_EVENTS[case]()])
    assert await snapshot(redis_client, svc.keys.prefix) == before
    assert s.events == []
    assert s.state == {}
    got = await svc.get_session(s.key)  # nothing pending: no read-your-writes wait
    assert got is not None
    assert got.events == []


@pytest.mark.parametrize("async_mode", MODES)
async def test_failed_append_leaves_the_callers_session_alone(make_service, async_mode) -> None:
    """An append that raises leaves session.events and session.state as they were."""
    svc = await make_service(enable_async_persist=async_mode)
    s = await svc.create_session(Key("app", "u", "s"))
    with pytest.raises(InvalidArgumentError):
        await svc.append_event(s, with_field(message(seq=b"1"), "author", 5))
    assert (s.events, s.state) == ([], {})
    await svc.delete_session(s.key)
    if not async_mode:  # async: the write is acknowledged, then dropped by the workers
        with pytest.raises(SessionNotFoundError):
            await svc.append_event(s, message(seq=b"2"))
        assert (s.events, s.state) == ([], {})
    with pytest.raises(InvalidArgumentError):
        await svc.append_track_event(s, TrackEvent(track="", payload=b"1"))
    with pytest.raises(InvalidArgumentError):
        await svc.append_track_event(s, TrackEvent(track="t", payload=b"{"))
    assert s.tracks is None
    assert "tracks" not in s.state


@pytest.mark.parametrize("async_mode", MODES)
async def test_extreme_timestamps_get_one_verdict_in_both_modes(
    make_service, redis_client, async_mode
) -> None:
    """Year-1/9999 timestamps and a track event without one are stored by both modes."""
    svc = await make_service(enable_async_persist=async_mode)
    s = await svc.create_session(Key("app", "u", "s"))
    early = Event.message("user", "early", timestamp=GoTime.ZERO)
    late = Event.message("user", "late", timestamp=GoTime.parse("9999-12-31T23:59:59Z"))
    receipts = await svc.append_events(s, [early, late])
    receipts.append(await svc.append_track_event(s, TrackEvent(track="t", payload=b"1")))
    if async_mode:
        assert await redis_client.xlen(_stream_of(svc, s.key)) == 3
        with contextlib.suppress(PersistTimeoutError):  # no worker here
            await svc.close(timeout=0.1)
        return
    got = await svc.get_session(s.key)
    assert got is not None
    assert [e.id for e in got.events] == [early.id, late.id]
    tracks = await svc.get_track_events(s.key, "t")
    assert [e.payload for e in tracks.events or []] == [b"1"]


def _stream_of(svc: SessionService, key: Key) -> str:
    from sessionstreams.common.shards import ShardKeys, shard_of

    n = svc.settings.async_persister_num
    return ShardKeys(svc.settings.key_prefix, shard_of(key, n), n).stream


async def test_bytes_in_string_fields_are_refused(make_service) -> None:
    """author = b"bob" used to be stored as "Ym9i": bytes where Go has a string are refused."""
    svc = await make_service()
    s = await svc.create_session(Key("app", "u", "s"))
    with pytest.raises(InvalidArgumentError, match=r"event\.author must be a str, not bytes"):
        await svc.append_event(s, with_field(message(), "author", b"bob"))


async def test_untyped_errors_of_other_arguments_become_ours(make_service) -> None:
    """A naive datetime, an int id or a lone surrogate in an id raise our errors."""
    svc = await make_service()
    with pytest.raises(InvalidArgumentError):
        await svc.get_session(Key("app", "u", "s"), after=datetime.datetime(2020, 1, 1))
    with pytest.raises(InvalidKeyError):
        await svc.get_session(Key("app", 7, "s"))  # type: ignore[arg-type]
    with pytest.raises(InvalidKeyError):
        await svc.create_session(Key("app", "u\ud800", "s"))
    with pytest.raises(InvalidKeyError):
        await svc.create_session(Key("app", "u", "s"), state={"": b"x"})
    with pytest.raises(InvalidKeyError):
        await svc.create_session(Key("app", "u", "s"), state={"app:": b"x"})
    with pytest.raises(InvalidArgumentError):
        await svc.update_session_state(Key("app", "u", "s"), {"k": "\ud800"})


# -- 4. a refused append writes no app state ------------------------------------------------


@pytest.mark.parametrize("async_mode", MODES)
async def test_refused_append_writes_no_app_state(make_service, redis_client, async_mode) -> None:
    """A write the session script refuses does not write its app: delta."""
    svc = await make_service(enable_async_persist=async_mode)
    s = await svc.create_session(Key("app", "u", "s"))
    await redis_client.set(svc.keys.meta(s.key), b"not json")
    if async_mode:
        return  # the worker side is tests/test_hostile_pipeline.py
    with pytest.raises(CorruptDataError):
        await svc.append_event(s, message(**{"app:x": b"1", "user:y": b"2"}))
    assert await redis_client.exists(svc.keys.app_state("app")) == 0
    assert await redis_client.exists(svc.keys.user_state(s.key)) == 0
    await svc.delete_session(s.key)
    with pytest.raises(SessionNotFoundError):
        await svc.append_event(s, message(**{"app:x": b"1"}))
    assert await redis_client.exists(svc.keys.app_state("app")) == 0


async def test_wrong_type_app_state_key_refuses_the_append(make_service, redis_client) -> None:
    """A wrong-type app-state key is found before the script: the event is not stored."""
    svc = await make_service()
    s = await svc.create_session(Key("app", "u", "s"))
    await redis_client.set(svc.keys.app_state("app"), b"x")
    with pytest.raises(CorruptDataError):
        await svc.append_event(s, message(**{"app:x": b"1"}))
    assert await redis_client.exists(svc.keys.event_data(s.key)) == 0
    assert s.events == []


# -- 8. the request record stays capped ----------------------------------------------------------


@pytest.mark.parametrize("batch", [16, 7, 1])
async def test_request_record_stays_capped_whatever_the_batch_size(
    make_service, redis_client, batch
) -> None:
    """The request record stays near its cap whatever the number of events per call."""
    svc = await make_service(session_event_storage_limit=0)
    s = await svc.create_session(Key("app", "u", "s"))
    calls = 1300 // batch + 1
    for i in range(calls):
        await svc.append_events(s, [message(f"m{i}-{j}") for j in range(batch)])
    size = await redis_client.zcard(svc.keys.applied(s.key))
    assert RECORD_CAP <= size <= RECORD_CAP + 16


# -- 11. our bookkeeping keys do not outlive their session ---------------------------------------


async def _ours(client, prefix: str) -> dict[bytes, int]:
    """Every ``ss:`` key under ``prefix`` (sync mode: no shard keys) with its PTTL."""
    return {name: await client.pttl(name)
            async for name in client.scan_iter(match=f"{prefix}:ss:*", count=500)}


@pytest.mark.parametrize("mode", [CompatMode.NONE, CompatMode.TRANSITION])
async def test_bookkeeping_keys_expire_even_without_session_ttl(
    make_service, redis_client, mode
) -> None:
    """Our ss: keys expire within KEEP_MS without a session TTL, with it when it has one."""
    svc = await make_service(compat_mode=mode, session_event_storage_limit=5)
    s = await svc.create_session(Key("app", "u", "s"))
    for i in range(8):
        await svc.append_event(s, message(f"m{i}", seq=str(i).encode()))
    await svc.append_track_event(s, TrackEvent(track="t", payload=b"1", timestamp=GoTime.now()))
    await svc.update_session_state(s.key, {"k": b"v"})
    await svc.trim_conversations(s.key)
    engine = svc.store.engines["zset" if mode is CompatMode.TRANSITION else "hashidx"]
    await engine.set_summary(s.key, filter_key="", ttl_ms=0, cut="1-0",
                             summary=Summary(summary="x", updated_at=GoTime.now()))
    ours = await _ours(redis_client, svc.keys.prefix)
    assert len(ours) >= 3, ours  # request record, info, summary runs
    assert all(0 < ttl <= KEEP_MS for ttl in ours.values()), ours
    with_ttl = await make_service(compat_mode=mode, session_ttl=60, key_prefix=svc.keys.prefix)
    s2 = await with_ttl.create_session(Key("app", "u", "s2"))
    await with_ttl.append_event(s2, message("x"))
    record = svc.keys.record(s2.key, "zset" if mode is CompatMode.TRANSITION else "hashidx")
    assert 0 < await redis_client.pttl(record) <= 60_000


# -- 9. close and SIGTERM keep their bounds while Redis is paused ----------------------------------


@contextlib.contextmanager
def paused(server):
    """SIGSTOP the server for the block (its clients' commands hang), then SIGCONT it."""
    server.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        server.process.send_signal(signal.SIGCONT)


async def test_close_respects_its_timeout_while_redis_is_paused(tmp_path) -> None:
    """close(timeout=1) returns within its timeout while Redis is paused (was ~50 s)."""
    server = start_redis_server(tmp_path)
    svc = SessionService(Settings(url=server.url, enable_async_persist=True,
                                  async_persister_num=2))
    try:
        await svc.start()
        s = await svc.create_session(Key("app", "u", "s"))
        await svc.append_event(s, message())  # no worker: it stays pending
        with paused(server):
            started = time.monotonic()
            with pytest.raises(PersistTimeoutError):
                await asyncio.wait_for(svc.close(timeout=1), 60)
            elapsed = time.monotonic() - started
        assert elapsed < 1 + CLOSE_SLACK_S, elapsed
    finally:
        server.stop()


#: What closing may add to a timeout (closing sockets, scheduling on a loaded machine); a
#: paused server used to cost 50 s.
CLOSE_SLACK_S = 4.0


# -- 10. writes Redis lost are reported once, then reads are served -------------------------------


async def test_lost_stream_entries_are_reported_once_then_reads_served(tmp_path) -> None:
    """A write Redis lost is reported once (PersistLostError), then reads are served."""
    server = start_redis_server(tmp_path)
    settings = Settings(url=server.url, enable_async_persist=True, async_persister_num=2,
                        read_your_writes_wait_s=10, lease_ttl_s=2, heartbeat_interval_s=0.2,
                        block_ms=100)
    svc = SessionService(settings)
    try:
        await svc.start()
        s = await svc.create_session(Key("app", "u", "s"))
        lost = await svc.append_event(s, message("lost"))
        server.stop()
        server = start_redis_server(tmp_path, port=server.port)  # empty: no AOF, no RDB
        started = time.monotonic()
        with pytest.raises(PersistLostError, match=lost.rid):
            await svc.get_session(s.key)
        assert time.monotonic() - started < settings.read_your_writes_wait_s
        assert await svc.get_session(s.key) is None  # the session was lost too
        s = await svc.create_session(Key("app", "u", "s"))
        await svc.append_event(s, message("kept"))
        worker = Worker(settings)
        running = asyncio.create_task(worker.run())
        try:
            got = await svc.get_session(s.key)
            assert got is not None
            assert [e.response.choices[0].message.content for e in got.events] == ["kept"]
            with pytest.raises(PersistLostError):
                await svc.wait_persisted(str(lost), timeout=10)
        finally:
            worker.stopping.set()
            await asyncio.wait_for(running, 30)
    finally:
        await svc.close()
        server.stop()


# -- 13. secrets stay out of messages ---------------------------------------------------------


SECRET = "s3cr?etV4lue#tail@x/y"


def _leaks(text: str, secret: str) -> list[str]:
    """Pieces (4+ characters) of the secret, split at URL delimiters, found in ``text``."""
    pieces = [p for p in re.split(r"[?#@/:&=]", secret) if len(p) >= 4]
    return [p for p in pieces if p in text]


@pytest.mark.parametrize("secret", [SECRET, "qz?Xk7Wv9", "Jm3q#Zr8tY", "Hv7k?w=Rq2#x1y2"])
@pytest.mark.parametrize("scheme", ["redis", "rediss", "redis+cluster", "redis+sentinel"])
def test_unencoded_password_never_appears_in_config_errors(scheme, secret) -> None:
    """A password with an unencoded '?' or '#' never shows in a ConfigError."""
    path = "/mymaster/0" if scheme == "redis+sentinel" else "/0"
    url = f"{scheme}://user:{secret}@127.0.0.1:6379{path}"
    assert not _leaks(redact_url(url), secret), redact_url(url)
    with pytest.raises(ConfigError, match="percent-encode") as info:
        Settings(url=url)
    assert not _leaks(str(info.value), secret), str(info.value)
    encoded = Settings(url=url.replace(secret, urllib.parse.quote(secret, safe="")))
    assert not _leaks(repr(encoded), secret), repr(encoded)


def test_sentinel_password_in_extra_options_is_masked_in_repr() -> None:
    """A Sentinel password passed in extra_options (sentinel_kwargs) appeared in repr."""
    settings = Settings(url="redis+sentinel://127.0.0.1:26379/mymaster/0", extra_options={
        "sentinel_kwargs": {"password": "sentinelSecret1", "username": "admin"},
        "password": "primarySecret2",
    })
    text = repr(settings)
    assert "sentinelSecret1" not in text
    assert "primarySecret2" not in text
    assert "admin" in text


# -- 14. weaknesses --------------------------------------------------------------------------------


@pytest.mark.parametrize("indexed", [False, True])
async def test_one_wrong_type_key_hides_only_its_session_in_listings(
    make_service, redis_client, indexed
) -> None:
    """A wrong-type key hides only its session from listings; delete removes it."""
    svc = await make_service(enable_user_session_index=indexed)
    good = await svc.create_session(Key("app", "u", "good"))
    await svc.append_event(good, message("hi"))
    bad = await svc.create_session(Key("app", "u", "bad"))
    await svc.append_event(bad, message("hi"))
    other = await svc.create_session(Key("app", "v", "x"))
    await redis_client.delete(svc.keys.event_data(bad.key))
    await redis_client.set(svc.keys.event_data(bad.key), b"not a hash")
    assert [s.id for s in await svc.list_sessions(UserKey("app", "u"))] == ["good"]
    meta = await redis_client.get(svc.keys.meta(bad.key))
    await redis_client.delete(svc.keys.meta(bad.key))
    await redis_client.hset(svc.keys.meta(bad.key), "x", meta)
    assert [s.id for s in await svc.list_sessions(UserKey("app", "u"))] == ["good"]
    listed = {s.id for s in await svc.list_app_sessions("app")}
    assert listed == {good.id, other.id}
    await svc.delete_session(bad.key)
    assert await redis_client.exists(svc.keys.meta(bad.key), svc.keys.event_data(bad.key)) == 0


BAD_METAS = {
    "array": b"[]",
    "array state": b'{"id":"s","state":[]}',
    "non-base64 state": b'{"id":"s","state":{"k":"not base64!"}}',
    "number state value": b'{"id":"s","state":{"k":5}}',
    "garbage createdAt": b'{"id":"s","state":{},"createdAt":"yesterday"}',
    "month 13": b'{"id":"s","state":{},"createdAt":"2024-13-01T00:00:00Z"}',
    "number id": b'{"id":5,"state":{}}',
}


@pytest.mark.parametrize("layout", ["hashidx", "zset"])
@pytest.mark.parametrize("case", list(BAD_METAS))
async def test_write_scripts_refuse_a_document_the_reader_refuses(
    make_service, redis_client, layout, case
) -> None:
    """Write scripts refuse a session document the reader refuses; nothing is written."""
    mode = CompatMode.TRANSITION if layout == "zset" else CompatMode.NONE
    svc = await make_service(compat_mode=mode)
    s = await svc.create_session(Key("app", "u", "s"))
    if layout == "zset":
        await redis_client.hset(svc.keys.legacy_sessions(s.key), "s", BAD_METAS[case])
    else:
        await redis_client.set(svc.keys.meta(s.key), BAD_METAS[case])
    with pytest.raises(DecodeError):
        await svc.get_session(s.key)
    before = await snapshot(redis_client, svc.keys.prefix)
    with pytest.raises(CorruptDataError):
        await svc.append_event(s, message(seq=b"1"))
    with pytest.raises(CorruptDataError):
        await svc.append_track_event(s, TrackEvent(track="t", payload=b"1",
                                                   timestamp=GoTime.now()))
    with pytest.raises(CorruptDataError):
        await svc.update_session_state(s.key, {"k": b"v"})
    assert await snapshot(redis_client, svc.keys.prefix) == before


async def test_valid_documents_written_by_go_still_take_writes(make_service, redis_client) -> None:
    """Documents in the shapes Go writes still take writes."""
    svc = await make_service(compat_mode=CompatMode.NONE)
    for i, created in enumerate(["2024-02-29T1:02:03,5+08:00", "2024-01-01T00:00:00.123456789Z",
                                 "0001-01-01T00:00:00Z"]):
        key = Key("app", "u", f"s{i}")
        doc = (f'{{"id":"s{i}","appName":"app","userID":"u","state":null,'
               f'"createdAt":"{created}","updatedAt":"{created}"}}')
        await redis_client.set(svc.keys.meta(key), doc.encode())
        s = await svc.get_session(key)
        assert s is not None
        await svc.append_event(s, message(seq=b"1"))
        await svc.update_session_state(key, {"k": b"v"})


async def test_tls_url_to_a_plain_server_fails_fast_with_a_hint(redis_server) -> None:
    """rediss:// to a server without TLS fails at start, saying so (was a ~20 s timeout)."""
    svc = SessionService(Settings(url=f"rediss://127.0.0.1:{redis_server.port}/0"))
    try:
        with pytest.raises(ConfigError, match="without TLS"):
            await asyncio.wait_for(svc.start(), 60)
    finally:
        await svc.close()


async def test_write_queued_behind_a_failing_call_keeps_its_own_budget(tmp_path) -> None:
    """A write queued behind a hanging call fails with it, not a call's time later."""
    server = start_redis_server(tmp_path)
    settings = Settings(url=server.url, enable_async_persist=True, async_persister_num=1,
                        socket_timeout_s=1.0, client_retries=1, backpressure_wait_s=0)
    svc = SessionService(settings)
    try:
        await svc.start()
        s = await svc.create_session(Key("app", "u", "s"))
        await svc.append_event(s, message("warm-up"))  # the shard's conf is checked

        async def timed(text: str) -> tuple[float, BaseException | None]:
            started = time.monotonic()
            try:
                await svc.append_event(s, message(text))
            except SessionStoreError as exc:
                return time.monotonic() - started, exc
            return time.monotonic() - started, None

        with paused(server):
            (leader_s, leader_error), (queued_s, queued_error) = await asyncio.gather(
                timed("in flight"), timed("queued"))
        assert isinstance(leader_error, StoreTimeoutError), leader_error
        assert isinstance(queued_error, StoreTimeoutError), queued_error
        assert queued_s < leader_s + 0.8, (leader_s, queued_s)
    finally:
        with contextlib.suppress(SessionStoreError):
            await svc.close(timeout=0.1)
        server.stop()


async def test_create_refuses_an_empty_state_key_like_update(make_service, redis_client) -> None:
    """create_session refuses an empty (or bare app:/user:) state key, as updates do."""
    svc = await make_service()
    for bad in ({"": b"x"}, {"app:": b"x"}, {"user:": b"x"}):
        with pytest.raises(InvalidKeyError):
            await svc.create_session(Key("app", "u", "s"), state=bad)
        assert await redis_client.exists(svc.keys.meta(Key("app", "u", "s"))) == 0
    s = await svc.create_session(Key("app", "u", "s"))
    with pytest.raises(InvalidKeyError, match="state key is required"):
        await svc.update_session_state(s.key, {"": b"x"})


async def test_out_of_memory_has_its_own_error(tmp_path) -> None:
    """A write refused at maxmemory raises OutOfMemoryError in both modes."""
    server = start_redis_server(tmp_path)
    admin = server.client()
    try:
        for async_mode in (False, True):
            svc = SessionService(Settings(url=server.url, key_prefix=f"m{async_mode:d}",
                                          enable_async_persist=async_mode))
            try:
                await svc.start()
                s = await svc.create_session(Key("app", "u", "s"))
                await svc.append_event(s, message("before"))  # the shard conf exists
                await admin.config_set("maxmemory", 1)
                try:
                    with pytest.raises(OutOfMemoryError, match="maxmemory"):
                        await svc.append_event(s, message("refused"))
                finally:
                    await admin.config_set("maxmemory", 0)
                assert [e.response.choices[0].message.content for e in s.events] == ["before"]
            finally:
                with contextlib.suppress(SessionStoreError):
                    await svc.close(timeout=0.1)
    finally:
        await admin.aclose()
        server.stop()
