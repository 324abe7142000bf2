"""Synchronous-mode benchmark: append_event and get_session against a bare redis-py round trip.

Everything runs in one process against one local Redis, interleaved sample by sample, so the
ratios compare like with like on a noisy machine:

- ``bare``: one HSET through a plain ``redis.asyncio`` client (the floor for any write);
- ``append``: ``SessionService.append_event`` of a short user message with a state delta;
- ``get``: ``SessionService.get_session(num_events=20)``;

on a session holding 1k stored events and one holding 100k (storage limit 0: never trimmed).

Usage: ``python ops/bench_sync.py [--url redis://127.0.0.1:6379/0] [--samples 2000] [--tracing]``.
Without ``--url`` a throwaway redis-server is started on a free loopback port. ``--tracing``
turns on ``enable_tracing`` (spans and metrics) with SDK providers that record everything and
export nothing, to measure what observability costs on the hot path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis.asyncio as aioredis

from sessionstreams.common.gotime import GoTime
from sessionstreams.common.models import Event, Key, Session
from sessionstreams.common.settings import Settings
from sessionstreams.producer import SessionService


@contextmanager
def local_redis() -> Iterator[str]:
    """A redis-server on a free loopback port, removed afterwards."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server not found on PATH (apt-get install redis-server)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.02)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(10)


def pct(samples: list[float], q: float) -> float:
    """The q-quantile of samples (nearest rank), in microseconds."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6


async def fill(svc: SessionService, session: Session, count: int) -> None:
    """Store ``count`` events (a user message every 4th) through append_events batches."""
    base = time.time_ns() - count * 1_000_000
    batch: list[Event] = []
    for i in range(count):
        role = "user" if i % 4 == 0 else "assistant"
        batch.append(Event.message(role, f"message {i} " + "x" * 80,
                                   timestamp=GoTime(base + i * 1_000_000)))
        if len(batch) == 500:
            await svc.append_events(session, batch)
            batch = []
            session.events.clear()
    if batch:
        await svc.append_events(session, batch)
    session.events.clear()


async def timed(fn: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


def install_recording_providers() -> None:
    """SDK tracer and meter providers that record every span and metric but export nothing."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider

    trace.set_tracer_provider(TracerProvider())
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))


async def run(url: str, samples: int, tracing: bool = False) -> dict[str, object]:
    if tracing:
        install_recording_providers()
    settings = Settings(url=url, key_prefix=f"bench{uuid.uuid4().hex[:6]}",
                        session_event_limit=20, session_event_storage_limit=0,
                        enable_tracing=tracing)
    bare = aioredis.Redis.from_url(url, protocol=2)
    results: dict[str, object] = {"samples": samples, "tracing": tracing}
    async with SessionService(settings) as svc:
        sessions = {}
        for size in (1_000, 100_000):
            s = await svc.create_session(Key("bench", "u", f"s{size}"))
            await fill(svc, s, size)
            sessions[size] = s
        times: dict[str, list[float]] = {"bare": []}
        for size in sessions:
            times[f"append_{size}"] = []
            times[f"get_{size}"] = []
        warm = max(samples // 10, 50)
        for i in range(samples + warm):
            t_bare = await timed(lambda: bare.hset("bench:bare", "f", "v" * 100))
            rec = {"bare": t_bare}
            for size, s in sessions.items():
                ev = Event.message("user", "short message " + "y" * 60,
                                   state_delta={"turn": str(i).encode()})
                rec[f"append_{size}"] = await timed(lambda s=s, ev=ev: svc.append_event(s, ev))
                s.events.clear()
                rec[f"get_{size}"] = await timed(
                    lambda s=s: svc.get_session(s.key, num_events=20))
            if i >= warm:
                for name, value in rec.items():
                    times[name].append(value)
        await svc.delete_session(sessions[1_000].key)
        await svc.delete_session(sessions[100_000].key)
    await bare.delete("bench:bare")
    await bare.aclose()
    base = statistics.median(times["bare"])
    for name, values in times.items():
        results[name] = {
            "p50_us": round(pct(values, 0.5), 1),
            "p99_us": round(pct(values, 0.99), 1),
            "p50_ratio_to_bare": round(statistics.median(values) / base, 2),
        }
    get1k, get100k = (statistics.median(times[f"get_{n}"]) for n in (1_000, 100_000))
    results["get_100k_over_1k"] = round(get100k / get1k, 2)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--tracing", action="store_true",
                        help="enable tracing and metrics (recorded, not exported)")
    args = parser.parse_args(argv)
    if args.url:
        out = asyncio.run(run(args.url, args.samples, args.tracing))
    else:
        with local_redis() as url:
            out = asyncio.run(run(url, args.samples, args.tracing))
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    traced = "tracing and metrics on" if out["tracing"] else "tracing off"
    print(f"sync benchmark, {out['samples']} interleaved samples per operation (µs), {traced}")
    print(f"{'operation':<14}{'p50':>9}{'p99':>9}{'p50 / bare':>12}")
    for name, row in out.items():
        if isinstance(row, dict):
            print(f"{name:<14}{row['p50_us']:>9}{row['p99_us']:>9}{row['p50_ratio_to_bare']:>12}")
    print(f"get_session p50 on 100k events / on 1k events: {out['get_100k_over_1k']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
