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


class _Replay:
    """A stand-in client answering every command with one recorded reply."""

    def __init__(self, reply: Any) -> None:
        self.reply = reply

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        return self.reply


async def _client_time(svc: SessionService, key: Key, calls: int) -> float:
    """µs of client work of get_session(20): the load script's reply recorded once, then
    replayed without a socket (best of 40 rounds of ``calls / 20`` gets)."""
    store = svc.store
    _, name, keys, args = store.hashidx.load_call(key, 20, None, "estua")
    real = store.client
    store.client = _Replay(await store.scripts.call(real, name, keys, args))
    try:
        per = max(calls // 20, 1)
        best = float("inf")
        for _ in range(40):
            start = time.perf_counter()
            for _ in range(per):
                await svc.get_session(key, num_events=20)
            best = min(best, (time.perf_counter() - start) / per)
    finally:
        store.client = real
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
        client_us = await _client_time(svc, key, calls)
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
              f"Client time of one get with the script's reply served from memory (no socket, "
              f"best of 40 rounds): {client_us:.1f} µs.\n", file=out)
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
