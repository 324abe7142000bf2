"""Profile ``SessionService.get_session(num_events=20)`` on a session of 1,000 stored events.

Fills one session (sync mode, short messages, a state delta every 10th), warms up, then runs
the reads under :mod:`cProfile` and prints the functions with the most own time and the most
cumulative time, plus the p50 of the same reads unprofiled beside a bare ``HSET`` round trip.

Usage: ``python ops/profile_get_session.py [--url URL] [--calls 2000] [--out FILE]``.
Without ``--url`` a throwaway redis-server is started on a free loopback port.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis.asyncio as aioredis
from bench_sync import local_redis

from sessionstreams.common import quickread
from sessionstreams.common.models import Event, Key
from sessionstreams.common.settings import CompatMode, Settings
from sessionstreams.producer import SessionService

ROOT = str(Path(__file__).resolve().parents[1]) + "/"


async def _p50s(get: Callable[[], Awaitable[None]], bare: Callable[[], Awaitable[None]],
                count: int) -> tuple[float, float]:
    """p50 in µs of ``get`` and of ``bare``, sampled interleaved."""
    gets: list[float] = []
    bares: list[float] = []
    for _ in range(count):
        for fn, into in ((get, gets), (bare, bares)):
            start = time.perf_counter()
            await fn()
            into.append(time.perf_counter() - start)
    return statistics.median(gets) * 1e6, statistics.median(bares) * 1e6


class _ReplayConnection:
    """A pooled connection answering every transaction with the replies recorded once."""

    socket_timeout = 5.0

    def __init__(self, replies: list[Any]) -> None:
        self.replies = replies
        self.at = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        self.at = 0

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        reply = self.replies[self.at]
        self.at += 1
        return reply

    async def disconnect(self, nowait: bool = False) -> None:
        pass


class _ReplayPool:
    def __init__(self, connection: _ReplayConnection) -> None:
        self.connection = connection

    async def get_connection(self) -> _ReplayConnection:
        return self.connection

    async def release(self, connection: _ReplayConnection) -> None:
        pass


class _Replay:
    """A stand-in client: every script call answered with one recorded reply, every
    transaction with one recorded sequence of replies."""

    def __init__(self, reply: Any, transaction: list[Any]) -> None:
        self.reply = reply
        self.connection_pool = _ReplayPool(_ReplayConnection(transaction))

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        return self.reply


async def _record_transaction(store: Any, key: Key) -> list[Any]:
    """The replies (MULTI's, each QUEUED, EXEC's) of the transaction a get of ``key``'s
    newest 20 events sends, read once from the server."""
    engine = store.hashidx
    window = engine.windows.window_for(key, 20)
    assert window is not None, "read the session once first"
    packed, count = engine._quick_head(key, 20, "estua")
    tail = quickread.pack([("HMGET", store.keys.event_data(key), *window.ids)])
    pool = store.client.connection_pool
    conn = await pool.get_connection()
    try:
        await conn.send_packed_command(quickread.MULTI + packed + tail + quickread.EXEC)
        return [await conn.read_response() for _ in range(count + 3)]
    finally:
        await pool.release(conn)


async def _client_time(svc: SessionService, key: Key, calls: int, quick: bool) -> float:
    """µs of client work of get_session(20): the replies of its read recorded once, then
    replayed without a socket (best of 40 rounds of ``calls / 20`` gets). ``quick``: the
    read is the transaction of a remembered window, else the load script."""
    store = svc.store
    _, name, keys, args = store.hashidx.load_call(key, 20, None, "estua")
    real, windows = store.client, store.hashidx.windows
    replay = _Replay(await store.scripts.call(real, name, keys, args),
                     await _record_transaction(store, key))
    store.client = store.hashidx.client = replay
    if not quick:
        store.hashidx.windows = quickread.WindowCache(capacity=0)
    try:
        per = max(calls // 20, 1)
        best = float("inf")
        for _ in range(40):
            start = time.perf_counter()
            for _ in range(per):
                await svc.get_session(key, num_events=20)
            best = min(best, (time.perf_counter() - start) / per)
    finally:
        store.client = store.hashidx.client = real
        store.hashidx.windows = windows
    return best * 1e6


async def profile(url: str, calls: int, events: int) -> str:
    settings = Settings(url=url, compat_mode=CompatMode.NONE, session_event_storage_limit=0)
    bare = aioredis.Redis.from_url(url)
    out = io.StringIO()
    async with SessionService(settings) as svc:
        session = await svc.create_session(Key("prof", uuid.uuid4().hex[:8], "s"))
        for i in range(events):
            role = "user" if i % 2 == 0 else "assistant"
            delta = {"turn": str(i).encode()} if i % 10 == 0 else None
            await svc.append_event(session, Event.message(
                role, f"short message {i} " + "x" * 40, state_delta=delta))
        session.events.clear()
        key = session.key

        async def get() -> None:
            got = await svc.get_session(key, num_events=20)
            assert got is not None
            assert len(got.events) == 20

        async def hset() -> None:
            await bare.hset("prof:bare", "f", "v" * 100)

        for _ in range(200):
            await get()
            await hset()
        script_us = await _client_time(svc, key, calls, quick=False)
        client_us = await _client_time(svc, key, calls, quick=True)
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(calls):
            await get()
        profiler.disable()
        get_p50, bare_p50 = await _p50s(get, hset, calls)
        stats = pstats.Stats(profiler, stream=out)
        print(f"get_session(num_events=20) of {events:,} stored events, {calls:,} calls "
              f"under cProfile.\nUnprofiled p50, interleaved with a bare HSET round trip: get "
              f"{get_p50:.0f} µs, bare HSET {bare_p50:.0f} µs ({get_p50 / bare_p50:.2f}×).\n"
              f"Client time of one get with its read's replies served from memory (no socket, "
              f"best of 40 rounds): {client_us:.1f} µs (the transaction of a remembered "
              f"window); {script_us:.1f} µs with the load script's reply.\n", file=out)
        print("== by own time (tottime)", file=out)
        stats.sort_stats("tottime").print_stats(25)
        print("== by cumulative time", file=out)
        stats.sort_stats("cumulative").print_stats(30)
    await bare.delete("prof:bare")
    await bare.aclose()
    return out.getvalue().replace(ROOT, "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    if args.url:
        text = asyncio.run(profile(args.url, args.calls, args.events))
    else:
        with local_redis() as url:
            text = asyncio.run(profile(url, args.calls, args.events))
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
