"""``sessionstreams status | dlq | shards`` sub-commands."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable
from typing import Any

from common.connection import create_client
from common.settings import Settings
from workers import admin


def _fmt_age(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def _row(s: admin.ShardStatus) -> str:
    ttl = f"{int(s.session_ttl_s)}s" if s.session_ttl_s else "none"
    lag = "-" if s.lag is None else str(s.lag)
    return (f"{s.shard:>5} {s.node:<21} {s.backlog:>7} {s.pending:>7} {lag:>5} "
            f"{s.owner or '(none)':<28} {s.failures:>4} {s.dead_letters:>4} "
            f"{_fmt_age(s.oldest_unacked_age_s):>14} {ttl:>6}")


def render_status(st: admin.Status) -> str:
    """The status as a readable table."""
    head = (f"{'shard':>5} {'node':<21} {'backlog':>7} {'pending':>7} {'lag':>5} {'owner':<28} "
            f"{'fail':>4} {'dlq':>4} {'oldest unacked':>14} {'ttl':>6}")
    lines = [head, *(_row(s) for s in st.shards)]
    lines.append(f"live workers: {len(st.workers)}")
    lines.extend(f"  {w} (heartbeat valid {ttl}s)" for w, ttl in st.workers.items())
    return "\n".join(lines)


async def _with_client(settings: Settings, fn: Callable[[Any], Any]) -> Any:
    client = create_client(settings)
    try:
        return await fn(client)
    finally:
        await client.aclose()


def _cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    async def once(client: Any) -> None:
        while True:
            st = await admin.status(client, settings)
            print(json.dumps(st.to_dict()) if args.json else render_status(st), flush=True)
            if not args.watch:
                return
            await asyncio.sleep(args.watch)

    asyncio.run(_with_client(settings, once))
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
            print(f"dropped {await admin.dlq_drop(client, settings, args.ids or None)}")

    asyncio.run(_with_client(settings, go))
    return 0


def _cmd_shards(args: argparse.Namespace, settings: Settings) -> int:
    asyncio.run(_with_client(settings, lambda c: admin.resize(c, settings, args.to)))
    print(f"shard count is now {args.to}: restart producers and workers with "
          f"SESSIONSTREAMS_ASYNC_PERSISTER_NUM={args.to}")
    return 0


def register(sub: Any, settings_of: Callable[[argparse.Namespace], Settings]) -> None:
    """Add the sub-commands to the ``sessionstreams`` parser."""

    def bind(fn: Callable[[argparse.Namespace, Settings], int]) -> Callable[..., int]:
        return lambda args: fn(args, settings_of(args))

    st = sub.add_parser("status", help="shards, backlog, pending, owners, dead letters, workers")
    st.add_argument("--json", action="store_true")
    st.add_argument("--watch", type=float, default=0.0, metavar="SECONDS")
    st.set_defaults(func=bind(_cmd_status))

    dlq = sub.add_parser("dlq", help="list, replay or drop dead letters")
    dlq.add_argument("action", choices=["list", "replay", "drop"])
    dlq.add_argument("ids", nargs="*", help="dead-letter ids (default: all)")
    dlq.set_defaults(func=bind(_cmd_dlq))

    shards = sub.add_parser("shards", help="shard-count administration")
    shards.add_argument("action", choices=["resize"])
    shards.add_argument("--to", type=int, required=True)
    shards.set_defaults(func=bind(_cmd_shards))
