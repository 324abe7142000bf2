"""CLI commands of the compat tools: ``index rebuild`` and ``migrate`` (see
sessionstreams.workers.cli)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from typing import Any

from sessionstreams.common.settings import Settings
from sessionstreams.common.store import Store
from sessionstreams.workers._cli import add_yes, confirm
from sessionstreams.workers._tooling import Progress, fault_from_env
from sessionstreams.workers.index_tools import rebuild_index
from sessionstreams.workers.migrate import Migrator

SettingsFn = Callable[[argparse.Namespace], Settings]

#: Exit code when some sessions could not be migrated (conflicts, busy, failed).
INCOMPLETE = 3


def register(sub: Any, settings_fn: SettingsFn) -> None:
    """Add ``index rebuild`` and ``migrate`` to the sub-command parsers."""
    index = sub.add_parser("index", help="user session index tools")
    index_sub = index.add_subparsers(dest="index_command", required=True, metavar="COMMAND")
    rebuild = index_sub.add_parser(
        "rebuild", help="add index entries for sessions created without the index; prune stale")
    rebuild.add_argument("--app", required=True, help="the app whose sessions are indexed")
    rebuild.add_argument("--user", default=None, help="only this user's sessions")
    rebuild.set_defaults(func=lambda args: asyncio.run(_rebuild(settings_fn(args), args)))

    migrate = sub.add_parser(
        "migrate", help="copy legacy (ZSet layout) sessions into HashIdx, then remove them")
    migrate.add_argument("--app", required=True, help="the app whose sessions are migrated")
    migrate.add_argument("--user", default=None, help="only this user's sessions")
    migrate.add_argument("--dry-run", action="store_true",
                         help="count what would be migrated; write nothing")
    add_yes(migrate)
    migrate.set_defaults(func=lambda args: _migrate_confirmed(settings_fn(args), args))


async def _rebuild(settings: Settings, args: argparse.Namespace) -> int:
    store = Store(settings)
    progress = Progress("index rebuild")
    try:
        report = await rebuild_index(
            store.client, store.keys, store.scripts, args.app, args.user,
            progress=progress, fault=fault_from_env(),
        )
    finally:
        progress.close()
        await store.aclose()
    print(report.summary())
    for key, why in report.invalid:
        print(f"  invalid: {key.app_name}/{key.user_id}/{key.session_id}: {why}")
    return 0


def _migrate_confirmed(settings: Settings, args: argparse.Namespace) -> int:
    if not args.dry_run:
        who = f"user {args.user!r} of app {args.app!r}" if args.user else f"app {args.app!r}"
        confirm(f"migrate the legacy sessions of {who} into HashIdx, deleting their legacy "
                "keys", args.yes)
    return asyncio.run(_migrate(settings, args))


async def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    store = Store(settings)
    progress = Progress("migrate")
    try:
        report = await Migrator(store, fault=fault_from_env()).run(
            args.app, args.user, dry_run=args.dry_run, progress=progress
        )
    finally:
        progress.close()
        await store.aclose()
    print(report.summary())
    return 0 if report.complete else INCOMPLETE
