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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis.asyncio as aioredis
from bench_sync import local_redis

from sessionstreams.common.models import Event, Key
from sessionstreams.common.settings import CompatMode, Settings
from sessionstreams.producer import SessionService

ROOT = str(Path(__file__).resolve().parents[1]) + "/"


async def _p50(fn: object, count: int) -> float:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        await fn()  # type: ignore[operator]
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6


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
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(calls):
            await get()
        profiler.disable()
        get_p50 = await _p50(get, calls)
        bare_p50 = await _p50(hset, calls)
        stats = pstats.Stats(profiler, stream=out)
        print(f"get_session(num_events=20) of {events:,} stored events, {calls:,} calls "
              f"under cProfile.\nUnprofiled p50: get {get_p50:.0f} µs, bare HSET "
              f"{bare_p50:.0f} µs ({get_p50 / bare_p50:.2f}×).\n", file=out)
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
