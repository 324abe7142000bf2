"""``sessionstreams user export | erase | import`` and ``sessionstreams retention``.

A user's data, whole (common.userdata): export as JSON Lines, erase everywhere (both layouts,
the streams included; the app state is shared and left alone), load an export back. Retention
(workers.retention) deletes the sessions idle for longer than an age, with a dry run that
lists them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from sessionstreams.common.gotime import GoTime
from sessionstreams.common.models import UserKey
from sessionstreams.common.settings import Settings
from sessionstreams.common.store import Store
from sessionstreams.common.userdata import UserData
from sessionstreams.workers._cli import CommandError, add_yes, confirm
from sessionstreams.workers._tooling import Progress
from sessionstreams.workers.retention import delete_expired, find_expired, parse_age

SettingsFn = Callable[[argparse.Namespace], Settings]


def register(sub: Any, settings_fn: SettingsFn) -> None:
    """Add ``user`` and ``retention`` to the sub-command parsers."""
    user = sub.add_parser("user", help="one user's data: export, erase, import")
    user_sub = user.add_subparsers(dest="user_command", required=True, metavar="COMMAND")

    export = user_sub.add_parser("export", help="write everything held about a user as JSON "
                                                "Lines (sessions of both layouts, state, "
                                                "writes in flight)")
    _who(export)
    export.add_argument("--out", default="-", metavar="FILE",
                        help="where to write (default: standard output)")
    export.set_defaults(func=lambda args: _export_to(settings_fn(args), args))

    erase = user_sub.add_parser("erase", help="delete every key and stream entry of a user, "
                                              "both layouts (the app state is left alone)")
    _who(erase)
    add_yes(erase)
    erase.set_defaults(func=lambda args: _erase_confirmed(settings_fn(args), args))

    load = user_sub.add_parser("import", help="load a user export back (refuses existing keys)")
    load.add_argument("--in", dest="source", default="-", metavar="FILE",
                      help="the export to load (default: standard input)")
    load.add_argument("--replace", action="store_true",
                      help="overwrite keys that exist already")
    load.set_defaults(func=lambda args: _import_from(settings_fn(args), args))

    retention = sub.add_parser("retention", help="delete the sessions not updated for longer "
                                                 "than an age (both layouts)")
    retention.add_argument("--older-than", required=True, metavar="AGE",
                           help="e.g. 30d, 12h, 90m (s, m, h, d, w)")
    retention.add_argument("--app", default="", help="only this app (default: every app)")
    retention.add_argument("--dry-run", action="store_true",
                           help="list what would be deleted; delete nothing")
    add_yes(retention)
    retention.set_defaults(func=lambda args: _retention_confirmed(settings_fn(args), args))


def _who(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--app", required=True, help="the app of the user")
    parser.add_argument("--user", required=True, help="the user id")


def _export_to(settings: Settings, args: argparse.Namespace) -> int:
    if args.out == "-":
        return asyncio.run(_export(settings, args, sys.stdout))
    with Path(args.out).open("w") as out:
        return asyncio.run(_export(settings, args, out))


async def _export(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    store = Store(settings)
    user = UserKey(args.app, args.user)
    counts = {"session": 0, "keys": 0, "in_flight": 0}
    try:
        async for record in UserData(store).export(user):
            out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
            counts["session"] += record["kind"] == "session"
            counts["keys"] += len(record.get("keys", ()))
            counts["in_flight"] += record["kind"] == "in_flight"
    finally:
        await store.aclose()
    print(f"exported {counts['session']} sessions, {counts['keys']} keys and "
          f"{counts['in_flight']} writes in flight of {args.app}/{args.user}", file=sys.stderr)
    return 0


def _erase_confirmed(settings: Settings, args: argparse.Namespace) -> int:
    confirm(f"erase every key and stream entry of user {args.user!r} of app {args.app!r}",
            args.yes)
    return asyncio.run(_erase(settings, args))


async def _erase(settings: Settings, args: argparse.Namespace) -> int:
    store = Store(settings)
    progress = Progress("erase", unit="step")
    try:
        report = await UserData(store).erase(UserKey(args.app, args.user),
                                             on_step=lambda _: progress.advance())
    finally:
        progress.close()
        await store.aclose()
    print(report.summary())
    return 0


def _records(source: TextIO) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(source, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CommandError(f"line {number} of the export is not JSON: {exc.msg}") from exc
        if not isinstance(record, dict):
            raise CommandError(f"line {number} of the export is not a record")
        yield record


def _import_from(settings: Settings, args: argparse.Namespace) -> int:
    if args.source == "-":
        records = list(_records(sys.stdin))
    else:
        with Path(args.source).open() as source:
            records = list(_records(source))
    return asyncio.run(_import(settings, args, records))


async def _import(
    settings: Settings, args: argparse.Namespace, records: list[dict[str, Any]]
) -> int:
    store = Store(settings)
    try:
        report = await UserData(store).load(records, replace=args.replace)
    finally:
        await store.aclose()
    print(f"imported {report.keys} keys of {report.sessions} sessions "
          f"({report.skipped_in_flight} writes that were in flight not replayed)")
    return 0


def _retention_confirmed(settings: Settings, args: argparse.Namespace) -> int:
    age = parse_age(args.older_than)
    cutoff = GoTime.from_datetime(datetime.now(UTC) - age)
    if not args.dry_run:
        scope = f"of app {args.app!r}" if args.app else "of every app"
        confirm(f"delete the sessions {scope} not updated since {cutoff.to_text()}", args.yes)
    return asyncio.run(_retention(settings, args, cutoff))


async def _retention(settings: Settings, args: argparse.Namespace, cutoff: GoTime) -> int:
    store = Store(settings)
    try:
        started = time.monotonic()
        expired = await find_expired(store, cutoff, app=args.app)
        verb = "would delete" if args.dry_run else "deleting"
        for item in expired:
            print(f"{verb} {item.line()}")
        if args.dry_run:
            print(f"{len(expired)} sessions not updated since {cutoff.to_text()} "
                  "(dry run: nothing deleted)")
            return 0
        progress = Progress("retention", total=len(expired))
        try:
            done = await delete_expired(store, expired, lambda _: progress.advance())
        finally:
            progress.close()
        elapsed = time.monotonic() - started
        print(f"deleted {done} sessions not updated since {cutoff.to_text()} "
              f"in {elapsed:.1f} s")
        return 0
    finally:
        await store.aclose()
