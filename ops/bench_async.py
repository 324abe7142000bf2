"""Async-mode benchmark: the streams pipeline against bare XADD and against sync mode.

One run, one local Redis (a throwaway redis-server unless ``--url``), worker processes started
here. Reported:

1. ``append_event`` in async mode, p50/p99, interleaved sample by sample with a bare redis-py
   XADD of a same-size payload (two workers running and keeping up);
2. p99 under a burst of 200 concurrent appenders, against 200 concurrent bare XADDs (sync mode
   under the same burst shown beside it);
3. drain rate of one worker (then two) from a pre-filled backlog over 200 sessions, against
   the sync-mode append rate at 200-way concurrency;
4. recovery after a worker SIGKILL: time until writes on its shards are applied again,
   against the lease TTL.

Usage: ``python ops/bench_async.py [--samples 5000] [--backlog 100000] [--only PART]...``
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "ops"))

import redis.asyncio as aioredis
from bench_peers import start_workers, stop_workers
from bench_sync import local_redis, pct

from sessionstreams.common.models import Event, Key, Session
from sessionstreams.common.settings import Settings
from sessionstreams.common.shards import ShardKeys
from sessionstreams.producer import SessionService
from sessionstreams.workers.admin import undelivered_or_pending

T = TypeVar("T")

PAYLOAD = b"x" * 600
#: The parts of the benchmark, in the order they run.
PARTS = ("latency", "burst", "drain", "recovery")  # about the size of an encoded append entry


def message(i: int) -> Event:
    return Event.message("user" if i % 2 == 0 else "assistant", f"short message {i} " + "y" * 60,
                         state_delta={"turn": str(i).encode()})


async def timed(coro: Any) -> float:
    start = time.perf_counter()
    await coro
    return time.perf_counter() - start


def row(values: list[float]) -> dict[str, float]:
    """p50 (the median, as the ratios use it) and p99 (nearest rank), in microseconds."""
    return {"p50_us": round(statistics.median(values) * 1e6, 1),
            "p99_us": round(pct(values, 0.99), 1)}


async def backlog_left(client: Any, settings: Settings) -> int:
    n = settings.async_persister_num
    left = 0
    for i in range(n):
        stream = ShardKeys(settings.key_prefix, i, n).stream
        left += await undelivered_or_pending(client, stream)
    return left


async def wait_drained(client: Any, settings: Settings, timeout: float = 600) -> float:
    start = time.monotonic()
    while await backlog_left(client, settings) > 0:
        if time.monotonic() - start > timeout:
            raise RuntimeError("backlog did not drain")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def sessions_for(svc: SessionService, count: int, tag: str) -> list[Session]:
    return [await svc.create_session(Key("bench", f"u{i % 50}", f"{tag}{i}")) for i in range(count)]


async def interleaved(url: str, settings: Settings, samples: int, workers: int) -> dict[str, Any]:
    bare = aioredis.Redis.from_url(url, protocol=2)
    procs = start_workers(settings, workers)
    svc = SessionService(settings)
    try:
        (s,) = await sessions_for(svc, 1, "lat")
        times: dict[str, list[float]] = {"bare_xadd": [], "async_append": []}
        warm = max(samples // 10, 50)
        for i in range(samples + warm):
            t_bare = await timed(bare.xadd("bench:bare", {"e": PAYLOAD}, maxlen=10_000))
            t_app = await timed(svc.append_event(s, message(i)))
            s.events.clear()
            if i >= warm:
                times["bare_xadd"].append(t_bare)
                times["async_append"].append(t_app)
        if not workers:
            procs = start_workers(settings, 1)  # drain what was queued
        await svc.flush(120)
    finally:
        await svc.close()
        await bare.delete("bench:bare")
        await bare.aclose()
        stop_workers(procs)
    base, ours = times["bare_xadd"], times["async_append"]
    return {"bare_xadd": row(base), "async_append": row(ours),
            "p50_ratio": round(statistics.median(ours) / statistics.median(base), 2),
            "p99_ratio": round(pct(ours, 0.99) / pct(base, 0.99), 2)}


async def burst(url: str, settings: Settings, rounds: int, workers: int) -> dict[str, Any]:
    bare = aioredis.Redis.from_url(url, protocol=2, max_connections=1000)
    procs = start_workers(settings, workers)
    svc = SessionService(settings)
    sync = SessionService(settings.replace(enable_async_persist=False))
    try:
        sessions = await sessions_for(svc, 200, "burst")
        sync_sessions = await sessions_for(sync, 200, "sburst")
        out: dict[str, list[float]] = {"bare_xadd": [], "async_append": [], "sync_append": []}

        def bare_add(_: int) -> Any:
            return bare.xadd("bench:burst", {"e": PAYLOAD}, maxlen=10_000)

        kinds: list[tuple[str, Any]] = [
            ("bare_xadd", lambda r: [bare_add(r) for _ in range(200)]),
            ("async_append", lambda r: [svc.append_event(s, message(r)) for s in sessions]),
            ("sync_append", lambda r: [sync.append_event(s, message(r)) for s in sync_sessions]),
        ]
        # Long-lived objects out of the collector's way, so that a full collection does not
        # land in one burst and not another; the order of the three bursts rotates per round.
        gc.collect()
        gc.freeze()
        for r in range(rounds + 1):  # round 0 warms up: every pool opens its 200 connections
            for name, calls in kinds[r % 3:] + kinds[:r % 3]:
                values = await asyncio.gather(*(timed(c) for c in calls(r)))
                if r:
                    out[name] += values
            for s in sessions + sync_sessions:
                s.events.clear()
        gc.unfreeze()
        if not workers:
            procs = start_workers(settings, 1)
        await svc.flush(120)
    finally:
        await svc.close()
        await sync.close()
        await bare.delete("bench:burst")
        await bare.aclose()
        stop_workers(procs)
    base = pct(out["bare_xadd"], 0.99)
    return {name: {**row(v), "p99_ratio_to_bare": round(pct(v, 0.99) / base, 2)}
            for name, v in out.items()}


async def sync_rate(settings: Settings, total: int) -> float:
    sync = SessionService(settings.replace(enable_async_persist=False))
    try:
        sessions = await sessions_for(sync, 200, "rate")

        async def writer(s: Session, n: int) -> None:
            for i in range(n):
                await sync.append_event(s, message(i))
                s.events.clear()

        start = time.perf_counter()
        await asyncio.gather(*(writer(s, total // 200) for s in sessions))
        return total / (time.perf_counter() - start)
    finally:
        await sync.close()


async def drain(url: str, settings: Settings, backlog: int, workers: int) -> float:
    client = aioredis.Redis.from_url(url, protocol=2)
    svc = SessionService(settings)
    try:
        sessions = await sessions_for(svc, 200, f"drain{workers}-")

        async def fill(s: Session, n: int) -> None:
            for i in range(n):
                await svc.append_event(s, message(i))
                s.events.clear()

        await asyncio.gather(*(fill(s, backlog // 200) for s in sessions))
        procs = start_workers(settings, workers)
        try:
            took = await wait_drained(client, settings)
        finally:
            stop_workers(procs)
        await svc.flush(60)
        return backlog / took
    finally:
        await svc.close()
        await client.aclose()


async def recovery(url: str, settings: Settings) -> dict[str, float]:
    client = aioredis.Redis.from_url(url, protocol=2)
    victim, other = start_workers(settings, 2)
    svc = SessionService(settings)
    try:
        sessions = await sessions_for(svc, 40, "rec")
        for s in sessions:  # warm: both workers own shards and keep up
            await svc.append_event(s, message(0))
        await svc.flush(30)
        await asyncio.sleep(2 * settings.lease_ttl_s)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        killed = time.monotonic()
        receipts = [await svc.append_event(s, message(1)) for s in sessions]
        await svc.flush(60)
        recovered = time.monotonic() - killed
        del receipts
        return {"recovery_s": round(recovered, 2), "lease_ttl_s": settings.lease_ttl_s,
                "ratio_to_lease_ttl": round(recovered / settings.lease_ttl_s, 2)}
    finally:
        await svc.close()
        await client.aclose()
        stop_workers([victim, other])


async def run(url: str, args: argparse.Namespace) -> dict[str, Any]:
    def settings(tag: str, **kw: Any) -> Settings:
        return Settings(url=url, key_prefix=f"ba{tag}{uuid.uuid4().hex[:4]}",
                        enable_async_persist=True, async_persister_num=10, lease_ttl_s=3.0,
                        heartbeat_interval_s=0.5, block_ms=500, worker_batch_size=1000,
                        stream_backlog_max=10_000_000, read_your_writes_wait_s=120,
                        session_event_storage_limit=0, **kw)

    out: dict[str, Any] = {"samples": args.samples, "backlog": args.backlog}
    parts = set(args.only or PARTS)
    steps = sum({"latency": 2, "burst": 2, "drain": 3, "recovery": 1}[p] for p in parts)
    done = 0
    started = time.perf_counter()

    async def step(what: str, work: Awaitable[T]) -> T:
        """Run one measurement, saying on stderr what runs and how long it took."""
        nonlocal done
        done += 1
        note(f"[{done}/{steps}] {what} ...")
        t0 = time.perf_counter()
        result = await work
        note(f"[{done}/{steps}] {what}: {time.perf_counter() - t0:.1f}s "
             f"(total {time.perf_counter() - started:.0f}s)")
        return result

    if "latency" in parts:
        out["latency_workers_running"] = await step(
            f"latency, {args.samples} samples, 2 workers running",
            interleaved(url, settings("lat"), args.samples, 2))
        out["latency_workers_idle"] = await step(
            f"latency, {args.samples} samples, no worker",
            interleaved(url, settings("lat0"), args.samples, 0))
    if "burst" in parts:
        out["burst_200_workers_running"] = await step(
            f"burst of 200, {args.burst_rounds} rounds, 2 workers running",
            burst(url, settings("burst"), args.burst_rounds, 2))
        out["burst_200_workers_idle"] = await step(
            f"burst of 200, {args.burst_rounds} rounds, no worker",
            burst(url, settings("burst0"), args.burst_rounds, 0))
    if "drain" in parts:
        rate = await step("sync append rate, 200-way",
                          sync_rate(settings("rate"), min(args.backlog, 40_000)))
        one = await step(f"drain of {args.backlog} entries, 1 worker",
                         drain(url, settings("d1"), args.backlog, 1))
        two = await step(f"drain of {args.backlog} entries, 2 workers",
                         drain(url, settings("d2"), args.backlog, 2))
        out["drain"] = {"sync_append_rate_200way_per_s": round(rate),
                        "one_worker_per_s": round(one), "two_workers_per_s": round(two),
                        "one_worker_ratio": round(one / rate, 2),
                        "two_workers_ratio": round(two / rate, 2)}
    if "recovery" in parts:
        out["recovery"] = await step("recovery after a worker SIGKILL",
                                     recovery(url, settings("rec")))
    return out


def note(text: str) -> None:
    """A progress line on stderr (stdout carries the JSON report only)."""
    print(f"bench async: {text}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="")
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--burst-rounds", type=int, default=20)
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--only", action="append", choices=PARTS,
                        help="run only this part (repeatable); default: all")
    args = parser.parse_args(argv)
    if args.url:
        out = asyncio.run(run(args.url, args))
    else:
        with local_redis() as url:
            out = asyncio.run(run(url, args))
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
