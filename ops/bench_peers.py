"""The peers of ``ops/bench_compare.py``: one small driver per session store.

Every driver offers the same four calls on its own store: ``new_session``, ``append`` (a short
message, with a state delta when asked), ``get_last`` (the newest ``n`` events or items) and
``list_user`` (one user's sessions). A store without state or listing says so, and its row
reads "n/a". Peer packages are optional (``pip install sessionstreams[bench]``); a peer whose
package is missing is reported as not installed.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import redis.asyncio as aioredis

from sessionstreams.common._codec import _decode_event_in
from sessionstreams.common.models import Event, Key, UserKey
from sessionstreams.common.settings import CompatMode, Settings
from sessionstreams.common.shards import PERSIST_GROUP, ShardKeys
from sessionstreams.producer import SessionService

APP = "bench"
ROOT = Path(__file__).resolve().parents[1]
#: Worker processes the async-mode peer runs (the development machine has 2 cores).
ASYNC_WORKERS = 2


@dataclass
class PeerSpec:
    """A peer as the benchmark lists it."""

    name: str
    build: Callable[[str, str], Peer]  # (redis url, scratch dir) -> peer
    needs: tuple[str, ...] = ()  # importable modules the peer requires
    pending: str = ""  # non-empty: not run, with this reason

    def missing(self) -> list[str]:
        return [m for m in self.needs if importlib.util.find_spec(m) is None]


@dataclass
class Peer:
    """Base driver; subclasses fill in the calls they support."""

    supports_state: bool = True
    supports_list: bool = True
    supports_create: bool = True
    closers: list[Callable[[], Any]] = field(default_factory=list)
    #: The Redis the peer stores in (its memory is measured there), if any.
    url: str = ""
    #: The physical limit of ``get_last`` on the same data (see NativePeer), if measured.
    limit_get: Callable[[Any, int], Awaitable[int]] | None = None

    async def start(self) -> None:
        """Called once before the workload (e.g. wait until worker processes apply)."""

    async def settle(self) -> dict[str, Any] | None:
        """Called after each append phase; a peer with workers waits for them to catch up
        and says what it found (None: nothing to report)."""
        return None

    async def new_session(self, user: str, sid: str) -> Any:
        raise NotImplementedError

    async def append(self, handle: Any, i: int, delta: bool) -> None:
        raise NotImplementedError

    async def get_last(self, handle: Any, n: int) -> int:
        raise NotImplementedError

    async def list_user(self, user: str) -> int:
        raise NotImplementedError

    async def stored_bytes(self, user: str, events: int) -> float | None:
        """Bytes per stored event the store holds for ``user``'s one session of ``events``
        events: by default the Redis ``MEMORY USAGE`` (every sample) of each key whose name
        holds the user id."""
        if not self.url:
            return None
        return await redis_bytes(self.url, user) / max(events, 1)

    async def close(self) -> None:
        for close in reversed(self.closers):
            result = close()
            if hasattr(result, "__await__"):
                await result


async def redis_bytes(url: str, needle: str) -> int:
    """The summed ``MEMORY USAGE ... SAMPLES 0`` of the keys whose name contains ``needle``
    (letters, digits and dashes only: no glob character)."""
    client = aioredis.Redis.from_url(url)
    total = 0
    try:
        async for name in client.scan_iter(match=f"*{needle}*", count=1000):
            total += await client.memory_usage(name, samples=0) or 0
    finally:
        await client.aclose()
    return total


def text(i: int) -> str:
    return f"short message {i} " + "x" * 40


def role(i: int) -> str:
    return "user" if i % 2 == 0 else "assistant"


def start_workers(settings: Settings, count: int) -> list[subprocess.Popen[bytes]]:
    """``count`` worker processes (``python -m sessionstreams.workers``) with these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONSTREAMS_")}
    for name in ("url", "key_prefix", "async_persister_num", "lease_ttl_s",
                 "heartbeat_interval_s", "block_ms", "worker_batch_size", "worker_linger_ms"):
        env[f"SESSIONSTREAMS_{name.upper()}"] = str(getattr(settings, name))
    env["SESSIONSTREAMS_COMPAT_MODE"] = settings.compat_mode.name.lower()
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return [subprocess.Popen([sys.executable, "-m", "sessionstreams.workers"], env=env, cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(count)]


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM (a worker drains and releases its leases), SIGKILL after 20 s."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _settings(url: str, **extra: Any) -> Settings:
    # A new deployment: no legacy ZSet data to consult (compat NONE), every event kept (ADK's
    # services never trim), listing through the user session index instead of SCAN.
    return Settings(url=url, compat_mode=CompatMode.NONE, session_event_storage_limit=0,
                    enable_user_session_index=True, **extra)


# -- sessionstreams, native ---------------------------------------------------------------------
@dataclass
class NativePeer(Peer):
    """SessionService itself: Event.message appends, get_session, list_sessions."""

    svc: Any = None

    @classmethod
    def build(cls, url: str, scratch: str, **extra: Any) -> NativePeer:
        peer = cls(svc=SessionService(_settings(url, **extra)), url=url)
        peer.limit_get = peer.physical_limit_get
        peer.closers.append(peer.svc.close)
        return peer

    async def physical_limit_get(self, handle: Any, n: int) -> int:
        """The floor of ``get_last``: one round trip of the read ``get_session`` sends (the
        transaction of a remembered window, else the load script) and msgspec decoding of
        the bytes it returns (the events into typed structs, the meta untyped), without
        building a session."""
        loaded = await self.svc.store.hashidx.load(handle.key, n, None, "estua")
        msgspec.json.decode(loaded.meta or b"null")
        return len([_decode_event_in(raw) for raw in loaded.events])

    async def new_session(self, user: str, sid: str) -> Any:
        return await self.svc.create_session(Key(APP, user, sid))

    async def append(self, handle: Any, i: int, delta: bool) -> None:
        state = {"turn": str(i).encode()} if delta else None
        await self.svc.append_event(handle, Event.message(role(i), text(i), state_delta=state))
        handle.events.clear()  # the caller keeps no history here

    async def get_last(self, handle: Any, n: int) -> int:
        got = await self.svc.get_session(handle.key, num_events=n)
        return len(got.events)

    async def list_user(self, user: str) -> int:
        return len(await self.svc.list_sessions(UserKey(APP, user), only_meta=True))


@dataclass
class AsyncNativePeer(NativePeer):
    """SessionService in async mode with ``ASYNC_WORKERS`` worker processes started here.

    An append is timed as the producer sees it (its stream write); after each append phase
    the backlog the workers have left is recorded and drained (``flush``) before the reads,
    so that a read does not include a read-your-writes wait.
    """

    settings: Settings | None = None
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @classmethod
    def build_async(cls, url: str, scratch: str) -> AsyncNativePeer:
        # Short leases (as in ops/bench_async.py) so that the workers share the shards
        # within seconds; they do not change the latency of an append.
        settings = _settings(url, enable_async_persist=True, read_your_writes_wait_s=120.0,
                             lease_ttl_s=3.0, heartbeat_interval_s=0.5)
        peer = cls(svc=SessionService(settings), settings=settings, url=url)
        peer.procs = start_workers(settings, ASYNC_WORKERS)
        peer.closers.append(lambda: stop_workers(peer.procs))  # after the service's flush
        peer.closers.append(peer.svc.close)
        return peer

    async def start(self) -> None:
        """Wait until the workers apply and share the shards evenly (no rebalancing
        hand-over during the workload)."""
        warm = await self.svc.create_session(Key(APP, "warm", "s"))
        await self.svc.append_event(warm, Event.message("user", "warm"))
        await self.svc.flush(60)
        assert self.settings is not None
        n = self.settings.async_persister_num
        leases = [ShardKeys(self.settings.key_prefix, i, n).lease for i in range(n)]
        deadline = time.monotonic() + 60
        steady = 0
        while steady < 3 and time.monotonic() < deadline:
            owners = [_text(o).split(":", 1)[0] if o else "" for o in
                      await self.svc.client.mget(leases)]
            shares = [owners.count(w) for w in set(owners)]
            balanced = ("" not in owners and len(shares) == len(self.procs)
                        and max(shares) - min(shares) <= 1)
            steady = steady + 1 if balanced else 0
            await asyncio.sleep(self.settings.heartbeat_interval_s)

    async def settle(self) -> dict[str, Any] | None:
        """The backlog when the appends ended and the time the workers took to apply it;
        then this producer's receipts are confirmed (flush), untimed."""
        assert self.settings is not None
        backlog = left = await backlog_of(self.svc.client, self.settings)
        started = time.perf_counter()
        while left:
            await asyncio.sleep(0.005)
            left = await backlog_of(self.svc.client, self.settings)
        drained = time.perf_counter() - started
        await self.svc.flush(600)
        alive = sum(p.poll() is None for p in self.procs)
        return {"workers": alive, "backlog": backlog, "drain_ms": round(drained * 1000, 1)}


async def backlog_of(client: Any, settings: Settings) -> int:
    """Entries on the shard streams the workers have not applied yet (pending in the persist
    group, or not delivered to it)."""
    n = settings.async_persister_num
    total = 0
    for i in range(n):
        stream = ShardKeys(settings.key_prefix, i, n).stream
        if not await client.exists(stream):
            continue
        groups = await client.xinfo_groups(stream)
        info = next((g for g in groups if _text(g["name"]) == PERSIST_GROUP), None)
        if info is None:
            total += await client.xlen(stream)
            continue
        delivered = _text(info["last-delivered-id"])
        undelivered = await client.xrange(stream, min="(" + delivered, max="+")
        total += int(info["pending"]) + len(undelivered)
    return total


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# -- Google ADK session services (ours through the adapter, and ADK's own) -----------------------
def adk_event(i: int, delta: bool) -> Any:
    from google.adk.events.event import Event as AdkEvent
    from google.adk.events.event_actions import EventActions
    from google.genai import types

    r = role(i)
    return AdkEvent(
        invocation_id=f"inv-{i // 2}", author="user" if r == "user" else "assistant",
        content=types.Content(role="user" if r == "user" else "model",
                              parts=[types.Part(text=text(i))]),
        actions=EventActions(state_delta={"turn": i} if delta else {}),
    )


@dataclass
class AdkPeer(Peer):
    """Any ADK BaseSessionService, driven through ADK's API."""

    service: Any = None

    async def new_session(self, user: str, sid: str) -> Any:
        return await self.service.create_session(app_name=APP, user_id=user, session_id=sid)

    async def append(self, handle: Any, i: int, delta: bool) -> None:
        await self.service.append_event(handle, adk_event(i, delta))

    async def get_last(self, handle: Any, n: int) -> int:
        from google.adk.sessions.base_session_service import GetSessionConfig

        got = await self.service.get_session(
            app_name=APP, user_id=handle.user_id, session_id=handle.id,
            config=GetSessionConfig(num_recent_events=n))
        return len(got.events)

    async def list_user(self, user: str) -> int:
        return len((await self.service.list_sessions(app_name=APP, user_id=user)).sessions)


def adk_adapter(url: str, scratch: str) -> Peer:
    from sessionstreams.producer.adk import SessionStreamsSessionService

    svc = SessionService(_settings(url))
    peer = AdkPeer(service=SessionStreamsSessionService(svc), url=url)
    peer.closers.append(svc.close)
    return peer


def adk_in_memory(url: str, scratch: str) -> Peer:
    from google.adk.sessions import InMemorySessionService

    return InMemoryAdkPeer(service=InMemorySessionService())


@dataclass
class InMemoryAdkPeer(AdkPeer):
    """ADK's InMemorySessionService; its memory is the Python heap's growth over 1,000
    appends to a fresh session (tracemalloc, outside the timed phases)."""

    async def stored_bytes(self, user: str, events: int) -> float | None:
        handle = await self.new_session(f"{user}-mem", "s")
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for i in range(events):
                await self.append(handle, i, i % 10 == 0)
            handle.events.clear()  # the caller's list; the events stay in the store's copy
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        await self.service.delete_session(app_name=APP, user_id=handle.user_id,
                                          session_id=handle.id)
        return grown / max(events, 1)


def adk_database(url: str, scratch: str) -> Peer:
    from google.adk.sessions import DatabaseSessionService

    service = DatabaseSessionService(db_url=f"sqlite+aiosqlite:///{scratch}/adk.db")
    peer = SqliteAdkPeer(service=service, path=Path(scratch) / "adk.db")
    peer.closers.append(service.close)
    return peer


@dataclass
class SqliteAdkPeer(AdkPeer):
    """ADK's DatabaseSessionService on sqlite; its memory is the database file (which holds
    only the measured session when it is measured)."""

    path: Path | None = None

    async def stored_bytes(self, user: str, events: int) -> float | None:
        assert self.path is not None
        return self.path.stat().st_size / max(events, 1)


def adk_redis(url: str, scratch: str) -> Peer:
    from google.adk.integrations.redis import RedisSessionService, RedisSessionServiceConfig

    service = RedisSessionService(RedisSessionServiceConfig(uri=url, ttl_seconds=0))
    peer = AdkPeer(service=service, url=url)
    peer.closers.append(lambda: service._get_redis().aclose())
    return peer


# -- OpenAI Agents SDK sessions (ours through the adapter, and the SDK's RedisSession) ----------
@dataclass
class AgentsPeer(Peer):
    """An Agents SDK Session: add_items / get_items(limit); no state, no listing."""

    factory: Callable[[str, str], Any] | None = None

    def __post_init__(self) -> None:
        self.supports_state = False
        self.supports_list = False
        self.supports_create = False

    async def new_session(self, user: str, sid: str) -> Any:
        assert self.factory is not None
        return self.factory(user, sid)

    async def append(self, handle: Any, i: int, delta: bool) -> None:
        await handle.add_items([{"role": role(i), "content": text(i)}])

    async def get_last(self, handle: Any, n: int) -> int:
        return len(await handle.get_items(limit=n))


def agents_adapter(url: str, scratch: str) -> Peer:
    from sessionstreams.producer.openai_agents import SessionStreamsSession

    svc = SessionService(_settings(url))
    peer = AgentsPeer(factory=lambda user, sid: SessionStreamsSession(
        sid, svc, app_name=APP, user_id=user), url=url)
    peer.closers.append(svc.close)
    return peer


def agents_redis(url: str, scratch: str) -> Peer:
    from agents.extensions.memory import RedisSession

    client = aioredis.Redis.from_url(url)
    peer = AgentsPeer(factory=lambda user, sid: RedisSession(
        f"{user}:{sid}", redis_client=client), url=url)
    peer.closers.append(client.aclose)
    return peer


PEERS: list[PeerSpec] = [
    PeerSpec("sessionstreams sync", NativePeer.build),
    PeerSpec("sessionstreams async", AsyncNativePeer.build_async),
    PeerSpec("sessionstreams ADK adapter", adk_adapter, ("google.adk",)),
    PeerSpec("ADK InMemory", adk_in_memory, ("google.adk",)),
    PeerSpec("ADK Database (sqlite)", adk_database, ("google.adk", "sqlalchemy", "aiosqlite")),
    PeerSpec("ADK Redis", adk_redis, ("google.adk",)),
    PeerSpec("sessionstreams Agents adapter", agents_adapter, ("agents",)),
    PeerSpec("Agents RedisSession", agents_redis, ("agents",)),
]
