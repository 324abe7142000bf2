"""Comparison benchmark: sessionstreams against ADK's and the Agents SDK's session stores.

The same workload for every peer, all on one local Redis in one run (each Redis-backed peer in
its own database), one peer after the other:

1. ``append_1k``: 1,000 appends of short messages (user and assistant in turn), a state delta
   every 10th, to a new session; then ``bytes``: the memory the store holds for that session,
   per stored event (Redis ``MEMORY USAGE`` of the session's keys; the database file for
   sqlite; the Python heap growth over the same appends for the in-memory store);
2. ``get20_1k``: the newest 20 events of that 1k-event session;
3. ``append_10k``: appends continue to 10,000 events; the row is the last 1,000 of them;
4. ``get20_10k``: the newest 20 events of the 10k-event session;
5. ``create``: ``create_session`` of empty sessions with given ids, 1,000 of one user;
6. ``list_user``: one user's 10 sessions listed among 1,000 sessions of 100 users;
7. ``list_1k``: the 1,000 sessions of the user of step 5 (meta only, no events).

Every sample is followed by a bare redis-py ``HSET`` round trip on the same server, and each
row's ratio is its p50 over the p50 of the bare round trips interleaved with it. Each operation
has a time budget per peer; a peer that rewrites its whole session per append slows down as
the session grows, and a row it could not finish is marked partial with the size reached.
Peers: sessionstreams (sync mode, natively and through both adapters; async mode natively, with
worker processes started for it), ADK's InMemory, Database (sqlite) and Redis session services,
and the Agents SDK's RedisSession (``pip install sessionstreams[bench]``). Beside the native
reads runs the physical limit of a read: one round trip of the same read (the transaction of a
remembered window, else the load script) plus msgspec decoding of the bytes it returns, without
building a session. In async mode an append is timed
as the producer sees it (its stream write); after each append phase the backlog the workers
have left is recorded and drained before the reads. Writes a markdown table and a PNG plot.

Usage: ``python ops/bench_compare.py [--smoke] [--budget-s 60] [--out-dir docs] [--url URL]``.
Without ``--url`` a throwaway redis-server is started on a free loopback port.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis.asyncio as aioredis
from bench_peers import PEERS, Peer, PeerSpec
from bench_report import LIMIT_NAME, labels, markdown, plot
from bench_sync import local_redis, pct


@dataclass(frozen=True)
class Sizes:
    """Workload sizes (the full run, or the smoke run of CI)."""

    small: int = 1_000
    large: int = 10_000
    tail: int = 1_000  # appends reported in append_10k
    gets: int = 200
    users: int = 100
    per_user: int = 10
    lists: int = 100
    creates: int = 1_000  # sessions of the one user of list_1k
    big_lists: int = 30
    bare: int = 1_000


SMOKE = Sizes(small=60, large=200, tail=60, gets=20, users=10, per_user=5, lists=10,
              creates=50, big_lists=5, bare=200)

Bare = Callable[[], Awaitable[object]]


async def timed_calls(
    fn: Callable[[int], Awaitable[object]], count: int, deadline: float, bare: Bare | None = None,
    also: Callable[[int], Awaitable[object]] | None = None,
) -> tuple[list[float], list[float], list[float]]:
    """Up to ``count`` timed calls ``fn(i)``, stopping at the monotonic ``deadline``; each one
    followed by a timed ``bare()`` round trip and a timed ``also(i)`` when given.

    Returns:
        The samples of ``fn``, of ``bare`` and of ``also`` (seconds).
    """
    samples: list[float] = []
    bares: list[float] = []
    others: list[float] = []
    for i in range(count):
        if time.monotonic() > deadline:
            break
        start = time.perf_counter()
        await fn(i)
        samples.append(time.perf_counter() - start)
        if bare is not None:
            start = time.perf_counter()
            await bare()
            bares.append(time.perf_counter() - start)
        if also is not None:
            start = time.perf_counter()
            await also(i)
            others.append(time.perf_counter() - start)
    return samples, bares, others


def summary(samples: list[float], bare_p50_s: float, **info: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"samples": len(samples), **info}
    if samples:
        row["p50_us"] = round(pct(samples, 0.5), 1)  # pct gives µs
        row["p99_us"] = round(pct(samples, 0.99), 1)
        row["ratio"] = round(statistics.median(samples) / bare_p50_s, 2)
    return row


class Workload:
    """Runs the operations on one peer."""

    def __init__(self, peer: Peer, sizes: Sizes, budget_s: float, bare: Bare) -> None:
        self.peer, self.sizes, self.budget_s, self.bare = peer, sizes, budget_s, bare
        self.rows: dict[str, dict[str, Any] | None] = {}
        self.limit_rows: dict[str, dict[str, Any] | None] = {}
        self.bare_samples: list[float] = []
        self.tag = uuid.uuid4().hex[:6]  # user ids of this run: a shared --url stays clean

    def _deadline(self) -> float:
        return time.monotonic() + self.budget_s

    def _row(self, op: str, samples: list[float], bares: list[float], size: int, target: int,
             into: dict[str, dict[str, Any] | None] | None = None) -> None:
        label = labels(self.sizes.__dict__)[op]
        self.bare_samples += bares
        bare_p50 = statistics.median(bares) if bares else 1.0
        row = summary(samples, bare_p50, size=size, target=target, partial=size < target,
                      label=label)
        if bares:
            row["bare_p50_us"] = round(bare_p50 * 1e6, 1)
        (self.rows if into is None else into)[op] = row

    async def run(self) -> dict[str, dict[str, Any] | None]:
        peer, z = self.peer, self.sizes
        user = f"{self.tag}-grower"
        handle = await peer.new_session(user, "s")
        size = 0

        async def append(i: int) -> None:
            nonlocal size
            await peer.append(handle, size, peer.supports_state and size % 10 == 0)
            size += 1

        samples, bares, _ = await timed_calls(append, z.small, self._deadline(), self.bare)
        self._row("append_1k", samples, bares, size, z.small)
        await self._settle("append_1k")
        per_event = await peer.stored_bytes(user, size)
        self.rows["bytes"] = None if per_event is None else {
            "bytes_per_event": round(per_event), "size": size, "samples": 1,
            "partial": size < z.small, "target": z.small}
        await self._gets("get20_1k", handle, size, z.small)
        samples, bares, _ = await timed_calls(append, z.large - size, self._deadline(),
                                              self.bare)
        self._row("append_10k", samples[-z.tail:], bares[-z.tail:], size, z.large)
        await self._settle("append_10k")
        await self._gets("get20_10k", handle, size, z.large)
        await self._creates_and_lists()
        return self.rows

    async def _settle(self, op: str) -> None:
        """Let a peer with workers catch up; its report goes with the append row."""
        info = await self.peer.settle()
        row = self.rows[op]
        if info is not None and row is not None:
            row["workers"] = info

    async def _gets(self, op: str, handle: Any, size: int, target: int) -> None:
        limit = self.peer.limit_get
        samples, bares, limits = await timed_calls(
            lambda _: self.peer.get_last(handle, 20), self.sizes.gets, self._deadline(),
            self.bare, None if limit is None else (lambda _: limit(handle, 20)))
        self._row(op, samples, bares, size, target)
        if limit is not None:
            self._row(op, limits, bares, size, target, into=self.limit_rows)
        row = self.rows[op]
        if row is not None:
            row["server_us"] = await self._server_time(lambda: self.peer.get_last(handle, 20))

    async def _server_time(self, call: Callable[[], Awaitable[object]]) -> float | None:
        """Redis server µs per ``call`` (INFO commandstats over 100 calls alone): the time of
        the scripts and transactions it runs when it runs any (their inner commands are
        inside them), else of every command. None when the store sent Redis nothing."""
        if not self.peer.url.startswith("redis"):
            return None
        client = aioredis.Redis.from_url(self.peer.url)
        try:
            await client.config_resetstat()
            for _ in range(100):
                await call()
            stats = await client.info("commandstats")
        finally:
            await client.aclose()
        usec = {name.removeprefix("cmdstat_"): float(v["usec"]) for name, v in stats.items()
                if not name.startswith(("cmdstat_config", "cmdstat_info"))}
        scripts = [t for name, t in usec.items()
                   if name in ("evalsha", "eval", "fcall", "multi", "exec")]
        total = sum(scripts) if scripts else sum(usec.values())
        return round(total / 100, 1) if usec else None

    async def _creates_and_lists(self) -> None:
        peer, z = self.peer, self.sizes
        big = f"{self.tag}-big"
        made_big = 0
        if peer.supports_create:
            async def create(i: int) -> None:
                nonlocal made_big
                await peer.new_session(big, f"c{i}")
                made_big += 1

            samples, bares, _ = await timed_calls(create, z.creates, self._deadline(),
                                                  self.bare)
            self._row("create", samples, bares, made_big, z.creates)
        else:
            self.rows["create"] = None
        if not peer.supports_list:
            self.rows["list_user"] = self.rows["list_1k"] = None
            return
        deadline = self._deadline()
        total = z.users * z.per_user
        made = 0
        for n in range(total):
            if time.monotonic() > deadline:
                break
            await peer.new_session(f"{self.tag}-user{n % z.users}", f"l{n}")
            made += 1
        expected = min(z.per_user, made // z.users + (made % z.users > 0))
        samples, bares, _ = await timed_calls(
            lambda _: self._list_checked(f"{self.tag}-user0", expected), z.lists, deadline,
            self.bare)
        self._row("list_user", samples, bares, made, total)
        samples, bares, _ = await timed_calls(
            lambda _: self._list_checked(big, made_big), z.big_lists, self._deadline(),
            self.bare)
        self._row("list_1k", samples, bares, made_big, z.creates)

    async def _list_checked(self, user: str, expected: int) -> None:
        found = await self.peer.list_user(user)
        if found != expected:
            raise AssertionError(f"listed {found} sessions of one user, expected {expected}")


async def bare_samples(client: aioredis.Redis, count: int) -> list[float]:
    samples, _, _ = await timed_calls(
        lambda _: client.hset("bench:bare", "f", "v" * 100), count, time.monotonic() + 60)
    return samples


def peer_url(base: str, db: int, own_server: bool) -> str:
    """Each peer's own database on a throwaway server; the given URL's database otherwise."""
    if not own_server:
        return base
    return base.rsplit("/", 1)[0] + f"/{db}"


async def run(url: str, own_server: bool, sizes: Sizes, budget_s: float,
              only: list[str]) -> dict[str, Any]:
    bare_client = aioredis.Redis.from_url(url, protocol=2)
    bare: list[float] = await bare_samples(bare_client, sizes.bare)

    async def bare_call() -> object:
        return await bare_client.hset("bench:bare", "f", "v" * 100)

    result: dict[str, Any] = {"budget_s": budget_s, "sizes": sizes.__dict__, "peers": []}
    with tempfile.TemporaryDirectory() as scratch:
        for db, spec in enumerate(PEERS, start=1):
            if only and spec.name not in only:
                continue
            entries = await run_peer(spec, peer_url(url, db, own_server), scratch, sizes,
                                     budget_s, bare_call)
            for entry in entries:
                bare += entry.pop("bare_samples", [])
            result["peers"] += entries
    await bare_client.delete("bench:bare")
    await bare_client.aclose()
    result["bare"] = summary(bare, statistics.median(bare))
    return result


async def run_peer(spec: PeerSpec, url: str, scratch: str, sizes: Sizes, budget_s: float,
                   bare: Bare) -> list[dict[str, Any]]:
    """The peer's entry, and the physical-limit entry when the peer measures one."""
    if spec.pending:
        return [{"name": spec.name, "skipped": spec.pending}]
    missing = spec.missing()
    if missing:
        return [{"name": spec.name, "skipped": "not installed: " + ", ".join(missing)}]
    print(f"  {spec.name} ...", file=sys.stderr, flush=True)
    peer = spec.build(url, scratch)
    try:
        await peer.start()
        work = Workload(peer, sizes, budget_s, bare)
        rows = await work.run()
    finally:
        await peer.close()
    entries = [{"name": spec.name, "rows": rows, "bare_samples": work.bare_samples}]
    if work.limit_rows:
        entries.append({"name": LIMIT_NAME, "rows": work.limit_rows, "limit": True})
    return entries


def print_table(result: dict[str, Any]) -> None:
    print(f"bare HSET round trip: p50 {result['bare']['p50_us']} µs, "
          f"p99 {result['bare']['p99_us']} µs")
    print(f"{'peer':<48}{'operation':<12}{'n':>6}{'p50 µs':>11}{'p99 µs':>11}{'×bare':>8}")
    for peer in result["peers"]:
        if peer.get("skipped"):
            print(f"{peer['name']:<48}{peer['skipped']}")
            continue
        for op, row in peer["rows"].items():
            if row is None:
                print(f"{peer['name']:<48}{op:<12}{'n/a':>6}")
            elif "bytes_per_event" in row:
                print(f"{peer['name']:<48}{op:<12}{row['size']:>6}"
                      f"{row['bytes_per_event']:>11,} bytes per stored event")
            elif not row["samples"]:
                print(f"{peer['name']:<48}{op:<12}{0:>6}  not reached")
            else:
                mark = f"  partial: {row['size']:,}/{row['target']:,}" if row["partial"] else ""
                if "workers" in row:
                    w = row["workers"]
                    mark += (f"  {w['workers']} workers: backlog {w['backlog']:,} at the end, "
                             f"drained in {w['drain_ms']:,.0f} ms")
                print(f"{peer['name']:<48}{op:<12}{row['samples']:>6}{row['p50_us']:>11,.0f}"
                      f"{row['p99_us']:>11,.0f}{row['ratio']:>8.2f}{mark}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="", help="use this Redis instead of a throwaway one")
    parser.add_argument("--smoke", action="store_true", help="small sizes (CI)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="time budget per peer and operation (default 60, smoke 10)")
    parser.add_argument("--out-dir", default=str(Path(__file__).resolve().parents[1] / "docs"))
    parser.add_argument("--peer", action="append", default=[], help="run only this peer")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # the peers' per-call log lines are noise here
    sizes = SMOKE if args.smoke else Sizes()
    budget = args.budget_s if args.budget_s is not None else (10.0 if args.smoke else 60.0)
    if args.url:
        result = asyncio.run(run(args.url, False, sizes, budget, args.peer))
    else:
        with local_redis() as url:
            result = asyncio.run(run(url, True, sizes, budget, args.peer))
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_compare.md").write_text(markdown(result))
    plot(result, out / "bench_compare.png")
    print_table(result)
    print(f"wrote {out / 'bench_compare.md'} and {out / 'bench_compare.png'}")
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
