"""Append latency of the agent-framework adapters in sync and async persistence modes.

One throwaway local redis-server (unless ``--url``); for async mode worker processes are
started here. Per mode: ``--samples`` appends of short messages (a state delta every 10th) to
one session through the ADK adapter (``append_event``) and through the Agents SDK adapter
(``add_items`` of one item), plus ``SessionService.append_event`` for reference, interleaved
sample by sample with a bare redis-py ``HSET`` round trip. Latency is what the producer sees;
in async mode the backlog the workers had left when the appends ended, and the time they took
to drain it, are reported with it.

Usage: ``python ops/bench_adapters.py [--samples 1000] [--workers 2] [--url URL] [--json]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis.asyncio as aioredis
from bench_peers import APP, adk_event, backlog_of, start_workers, stop_workers
from bench_sync import local_redis, pct

from sessionstreams.common.models import Event, Key
from sessionstreams.common.settings import CompatMode, Settings
from sessionstreams.producer import SessionService


def settings_for(url: str, mode: str) -> Settings:
    return Settings(url=url, key_prefix=f"ba{uuid.uuid4().hex[:6]}",
                    compat_mode=CompatMode.NONE, session_event_storage_limit=0,
                    enable_user_session_index=True, enable_async_persist=mode == "async",
                    read_your_writes_wait_s=120)


async def native(svc: SessionService) -> Callable[[int], Awaitable[object]]:
    session = await svc.create_session(Key(APP, "native", "s"))

    async def append(i: int) -> None:
        delta: dict[str, bytes | None] | None = {"turn": str(i).encode()} if i % 10 == 0 else None
        await svc.append_event(session, Event.message(
            "user" if i % 2 == 0 else "assistant", f"short message {i} " + "x" * 40,
            state_delta=delta))
        session.events.clear()

    return append


async def adk(svc: SessionService) -> Callable[[int], Awaitable[object]]:
    from sessionstreams.producer.adk import SessionStreamsSessionService

    adapter = SessionStreamsSessionService(svc)
    session = await adapter.create_session(app_name=APP, user_id="adk")

    async def append(i: int) -> None:
        await adapter.append_event(session, adk_event(i, i % 10 == 0))
        session.events.clear()

    return append


async def agents(svc: SessionService) -> Callable[[int], Awaitable[object]]:
    from sessionstreams.producer.openai_agents import SessionStreamsSession

    conversation = SessionStreamsSession("s", svc, app_name=APP, user_id="agents")

    async def append(i: int) -> None:
        item: Any = {"role": "user" if i % 2 == 0 else "assistant",
                     "content": f"short message {i}"}
        await conversation.add_items([item])

    return append


DRIVERS = {"native append_event": native, "ADK append_event": adk, "Agents add_items": agents}


async def measure(url: str, mode: str, samples: int, workers: int) -> dict[str, Any]:
    settings = settings_for(url, mode)
    procs = start_workers(settings, workers) if mode == "async" else []
    bare = aioredis.Redis.from_url(url, protocol=2)
    svc = SessionService(settings)
    out: dict[str, Any] = {}
    try:
        await svc.start()
        if procs:  # the workers are up and applying before anything is timed
            warm_session = await svc.create_session(Key(APP, "warm", "s"))
            await svc.append_event(warm_session, Event.message("user", "warm"))
            await svc.flush(60)
        for name, build in DRIVERS.items():
            append = await build(svc)
            warm = max(samples // 10, 20)
            ours: list[float] = []
            base: list[float] = []
            for i in range(samples + warm):
                start = time.perf_counter()
                await bare.hset("bench:bare", "f", "v" * 100)
                middle = time.perf_counter()
                await append(i)
                end = time.perf_counter()
                if i >= warm:
                    base.append(middle - start)
                    ours.append(end - middle)
            row: dict[str, Any] = {
                "p50_us": round(pct(ours, 0.5), 1), "p99_us": round(pct(ours, 0.99), 1),
                "bare_p50_us": round(pct(base, 0.5), 1),
                "ratio": round(pct(ours, 0.5) / pct(base, 0.5), 2),
            }
            if mode == "async":
                row["backlog_at_end"] = left = await backlog_of(bare, settings)
                started = time.perf_counter()
                while left:
                    await asyncio.sleep(0.005)
                    left = await backlog_of(bare, settings)
                row["drain_ms"] = round((time.perf_counter() - started) * 1000, 1)
                await svc.flush(120)
            out[name] = row
    finally:
        try:
            await svc.close()
            await bare.delete("bench:bare")
            await bare.aclose()
        finally:
            stop_workers(procs)
    return out


async def run(url: str, samples: int, workers: int) -> dict[str, Any]:
    return {"samples": samples, "workers": workers,
            "sync": await measure(url, "sync", samples, workers),
            "async": await measure(url, "async", samples, workers)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="", help="use this Redis instead of a throwaway one")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2, help="worker processes (async mode)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    if args.url:
        out = asyncio.run(run(args.url, args.samples, args.workers))
    else:
        with local_redis() as url:
            out = asyncio.run(run(url, args.samples, args.workers))
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{args.samples} appends per row, {args.workers} worker(s) in async mode")
    print(f"{'mode':<7}{'call':<22}{'p50 µs':>9}{'p99 µs':>9}{'×bare':>7}  workers")
    for mode in ("sync", "async"):
        for name, row in out[mode].items():
            state = (f"backlog {row['backlog_at_end']} at the end, drained in "
                     f"{row['drain_ms']:.0f} ms" if mode == "async" else "")
            print(f"{mode:<7}{name:<22}{row['p50_us']:>9,.0f}{row['p99_us']:>9,.0f}"
                  f"{row['ratio']:>7.1f}  {state}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
