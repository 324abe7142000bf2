"""``sessionstreams status | worker-health | dlq | shards`` sub-commands."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from sessionstreams.common.settings import Settings
from sessionstreams.common.store import Store
from sessionstreams.workers import admin
from sessionstreams.workers._cli import CommandError, add_yes, confirm

_HEAD = (f"{'shard':>5} {'node':<21} {'backlog':>7} {'pending':>7} {'lag':>5} {'owner':<28} "
         f"{'fail':>4} {'dlq':>4} {'oldest unacked':>14} {'ttl':>6}")


def _fmt_age(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def _row(s: admin.ShardStatus) -> str:
    ttl = f"{int(s.session_ttl_s)}s" if s.session_ttl_s else "none"
    lag = "-" if s.lag is None else str(s.lag)
    return (f"{s.shard:>5} {s.node:<21} {s.backlog:>7} {s.pending:>7} {lag:>5} "
            f"{s.owner or '(none)':<28} {s.failures:>4} {s.dead_letters:>4} "
            f"{_fmt_age(s.oldest_unacked_age_s):>14} {ttl:>6}")


def _totals(shards: list[admin.ShardStatus]) -> str:
    lag = sum(s.lag or 0 for s in shards)
    ages = [s.oldest_unacked_age_s for s in shards if s.oldest_unacked_age_s is not None]
    oldest = _fmt_age(max(ages) if ages else None)
    return (f"{'all':>5} {'':<21} {sum(s.backlog for s in shards):>7} "
            f"{sum(s.pending for s in shards):>7} {lag:>5} {'':<28} "
            f"{sum(s.failures for s in shards):>4} {sum(s.dead_letters for s in shards):>4} "
            f"{oldest:>14}")


def render_status(st: admin.Status, title: str = "") -> str:
    """The status as a readable table: one row per shard, totals, then the live workers with
    the shards each holds, and warnings for what needs a look."""
    lines = [title] if title else []
    lines += [_HEAD, *(_row(s) for s in st.shards), "-" * len(_HEAD), _totals(st.shards)]
    held: dict[str, list[int]] = {}
    for s in st.shards:
        if s.owner:
            held.setdefault(s.owner, []).append(s.shard)
    lines.append(f"live workers: {len(st.workers)}")
    for w, ttl in sorted(st.workers.items()):
        shards = ", ".join(map(str, held.get(w, []))) or "none"
        lines.append(f"  {w}  shards {shards}  (heartbeat valid {ttl}s)")
    orphans = [s.shard for s in st.shards if not s.owner and (s.lag or s.pending)]
    if orphans:
        lines.append(f"warning: shards {', '.join(map(str, orphans))} have entries waiting "
                     "and no owner (are workers running?)")
    dead = sum(s.dead_letters for s in st.shards)
    if dead:
        lines.append(f"warning: {dead} dead letter(s): see `sessionstreams dlq list`")
    return "\n".join(lines)


async def _with_client(settings: Settings, fn: Callable[[Any], Any]) -> Any:
    store = Store(settings)
    try:
        return await fn(store.client)
    finally:
        await store.aclose()


def _cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    clear = args.watch and not args.json and sys.stdout.isatty()

    async def once(client: Any) -> None:
        while True:
            st = await admin.status(client, settings)
            if args.json:
                print(json.dumps(st.to_dict()), flush=True)
            else:
                title = (f"sessionstreams status  {time.strftime('%Y-%m-%d %H:%M:%S')}  "
                         f"prefix {settings.key_prefix or '(none)'}  "
                         f"{len(st.shards)} shards")
                print(("\x1b[H\x1b[2J" if clear else "") + render_status(st, title), flush=True)
            if not args.watch:
                return
            await asyncio.sleep(args.watch)

    asyncio.run(_with_client(settings, once))
    return 0


def _cmd_worker_health(args: argparse.Namespace, settings: Settings) -> int:
    worker = args.worker
    prefix = "" if worker else f"{args.host or socket.gethostname()}-"
    live = asyncio.run(_with_client(settings, lambda c: admin.live_workers(c, settings)))
    found = {w: ttl for w, ttl in live.items() if w == worker or (prefix and w.startswith(prefix))}
    if not found:
        what = f"worker {worker}" if worker else f"worker on host {prefix[:-1]}"
        raise CommandError(f"no live heartbeat of a {what} ({len(live)} live worker(s) in all)")
    for w, ttl in sorted(found.items()):
        print(f"{w}: heartbeat valid {ttl}s")
    return 0


def _cmd_dlq(args: argparse.Namespace, settings: Settings) -> int:
    async def go(client: Any) -> None:
        if args.action == "list":
            for d in await admin.dlq_list(client, settings):
                print(f"shard {d.shard} {d.id} source {d.source} session {d.session} "
                      f"rid {d.rid} failures {d.failures}: {d.error}")
        elif args.action == "replay":
            print(f"replayed {await admin.dlq_replay(client, settings, args.ids or None)}")
        else:
            if not args.ids:
                count = len(await admin.dlq_list(client, settings))
                if count:
                    confirm(f"drop all {count} dead letter(s), for good", args.yes)
            print(f"dropped {await admin.dlq_drop(client, settings, args.ids or None)}")

    asyncio.run(_with_client(settings, go))
    return 0


def _cmd_shards(args: argparse.Namespace, settings: Settings) -> int:
    confirm(f"resize from {settings.async_persister_num} to {args.to} shards: producers get "
            "BackpressureError until every shard drained, then must restart with the new count",
            args.yes)
    asyncio.run(_with_client(settings, lambda c: admin.resize(c, settings, args.to)))
    print(f"shard count is now {args.to}: restart producers and workers with "
          f"SESSIONSTREAMS_ASYNC_PERSISTER_NUM={args.to}")
    return 0


def register(sub: Any, settings_of: Callable[[argparse.Namespace], Settings]) -> None:
    """Add the sub-commands to the ``sessionstreams`` parser."""

    def bind(fn: Callable[[argparse.Namespace, Settings], int]) -> Callable[..., int]:
        return lambda args: fn(args, settings_of(args))

    st = sub.add_parser("status", help="shards, backlog, pending, owners, dead letters, workers")
    st.add_argument("--json", action="store_true", help="one JSON object per refresh")
    st.add_argument("--watch", type=float, default=0.0, metavar="SECONDS",
                    help="refresh every SECONDS until interrupted")
    st.set_defaults(func=bind(_cmd_status))

    health = sub.add_parser(
        "worker-health", help="exit 0 only when a worker's heartbeat is live (health checks)")
    health.add_argument("--worker", default="", metavar="ID",
                        help="the worker id (default: any worker of this host, whose ids "
                             "start with the host name)")
    health.add_argument("--host", default="", metavar="NAME",
                        help="the host name to look for (default: this host's)")
    health.set_defaults(func=bind(_cmd_worker_health))

    dlq = sub.add_parser("dlq", help="list, replay or drop dead letters")
    dlq.add_argument("action", choices=["list", "replay", "drop"],
                     help="list them, replay them into their shard streams, or drop them")
    dlq.add_argument("ids", nargs="*", help="dead-letter ids (default: all)")
    add_yes(dlq)
    dlq.set_defaults(func=bind(_cmd_dlq))

    shards = sub.add_parser("shards", help="shard-count administration")
    shards.add_argument("action", choices=["resize"],
                        help="resize: drain every shard, then change the shard count")
    shards.add_argument("--to", type=int, required=True, metavar="N",
                        help="the new shard count")
    add_yes(shards)
    shards.set_defaults(func=bind(_cmd_shards))
