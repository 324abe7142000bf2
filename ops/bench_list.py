"""list_sessions benchmark: the user session index against the SCAN fallback.

The database holds 10k sessions of 1k users (10 each, two events per session, so about 31k
keys). One user's sessions are listed, interleaved sample by sample:

- ``index``: a service with ``enable_user_session_index=True`` (HSCAN of the user's index
  HASH, then one pipeline loading the sessions);
- ``scan``: a service without it (SCAN over the whole keyspace with the user's MATCH pattern,
  then the same pipeline). SCAN's cost grows with the database, not with the user.

Both use the default compat mode (LEGACY: the user's legacy HASH is read too, identically in
both). Usage: ``python ops/bench_list.py [--url redis://...] [--samples 100] [--users 1000]
[--per-user 10]``. Without ``--url`` a throwaway redis-server is started on a free port; with
it, the keys are written under a random prefix and removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis.asyncio as aioredis
from bench_sync import local_redis, pct

from sessionstreams.common.models import Event, Key, UserKey
from sessionstreams.common.settings import Settings
from sessionstreams.producer import SessionService


async def fill(svc: SessionService, users: int, per_user: int) -> None:
    """``users * per_user`` sessions with a user and an assistant message each."""

    async def one(i: int) -> None:
        s = await svc.create_session(Key("bench", f"user{i // per_user:05d}", f"s{i:06d}"))
        await svc.append_events(s, [Event.message("user", "hello " + "x" * 60),
                                    Event.message("assistant", "hi " + "y" * 120)])

    total = users * per_user
    for start in range(0, total, 200):
        await asyncio.gather(*(one(i) for i in range(start, min(start + 200, total))))


async def run(url: str, samples: int, users: int, per_user: int) -> dict[str, object]:
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    indexed = SessionService(Settings(url=url, key_prefix=prefix,
                                      enable_user_session_index=True))
    scanning = SessionService(Settings(url=url, key_prefix=prefix))
    client = aioredis.Redis.from_url(url, protocol=2)
    try:
        started = time.perf_counter()
        await fill(indexed, users, per_user)
        fill_s = time.perf_counter() - started
        user = UserKey("bench", f"user{users // 2:05d}")
        times: dict[str, list[float]] = {"index": [], "scan": []}
        for i in range(samples + 5):
            for name, svc in (("index", indexed), ("scan", scanning)):
                t0 = time.perf_counter()
                listed = await svc.list_sessions(user)
                elapsed = time.perf_counter() - t0
                assert len(listed) == per_user, (name, len(listed))
                if i >= 5:  # warm-up
                    times[name].append(elapsed)
        dbsize = await client.dbsize()
    finally:
        await indexed.close()
        await scanning.close()
        async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            await client.unlink(key)
        await client.aclose()
    out: dict[str, object] = {"samples": samples, "sessions": users * per_user,
                              "users": users, "keys": dbsize, "fill_s": round(fill_s, 1)}
    for name, values in times.items():
        out[name] = {"p50_ms": round(pct(values, 0.5) / 1000, 3),
                     "p99_ms": round(pct(values, 0.99) / 1000, 3)}
    out["scan_over_index_p50"] = round(
        statistics.median(times["scan"]) / statistics.median(times["index"]), 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="")
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--per-user", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args(argv)
    if args.url:
        out = asyncio.run(run(args.url, args.samples, args.users, args.per_user))
    else:
        with local_redis() as url:
            out = asyncio.run(run(url, args.samples, args.users, args.per_user))
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"list_sessions of one user: {out['sessions']} sessions of {out['users']} users, "
          f"{out['keys']} keys, {out['samples']} interleaved samples (filled in "
          f"{out['fill_s']} s)")
    for name in ("index", "scan"):
        row = out[name]
        assert isinstance(row, dict)
        print(f"  {name:<6} p50 {row['p50_ms']:>8} ms   p99 {row['p99_ms']:>8} ms")
    print(f"SCAN / index (p50): {out['scan_over_index_p50']}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
