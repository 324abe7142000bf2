"""Retention: sessions not updated for longer than an age are found and deleted, both layouts."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from legacy_layout import GoLegacyWriter
from workers_harness import worker_env

from sessionstreams.common.errors import InvalidArgumentError
from sessionstreams.common.gotime import GoTime
from sessionstreams.common.models import Event, Key, SessionMeta
from sessionstreams.common.settings import CompatMode
from sessionstreams.workers.retention import delete_expired, find_expired, parse_age

pytestmark = pytest.mark.topologies("cluster")

OLD = GoTime.from_datetime(datetime.now(UTC) - timedelta(days=40))


async def _age_hashidx(svc: Any, key: Key) -> None:
    """Back-date a HashIdx session's updatedAt by 40 days (as if idle since)."""
    raw = await svc.client.get(svc.keys.meta(key))
    meta = msgspec.structs.replace(SessionMeta.from_json(raw), created_at=OLD, updated_at=OLD)
    await svc.client.set(svc.keys.meta(key), meta.to_json(), keepttl=True)


async def _sessions(make_service: Callable[..., Awaitable[Any]], redis_client: Any,
                    key_prefix: str) -> tuple[Any, dict[str, Key]]:
    svc = await make_service(compat_mode=CompatMode.LEGACY)
    keys = {
        "old": Key("a", "u1", "old"), "new": Key("a", "u1", "new"),
        "other_app_old": Key("b", "u1", "old"),
    }
    for name, key in keys.items():
        s = await svc.create_session(key)
        await svc.append_event(s, Event.message("user", name))
        if "old" in name:
            await _age_hashidx(svc, key)
    go = GoLegacyWriter(redis_client, key_prefix)
    keys["legacy_old"] = Key("a", "u2", "lold")
    keys["legacy_new"] = Key("a", "u2", "lnew")
    await go.create(keys["legacy_old"], created=OLD)
    await go.append(keys["legacy_old"], Event.message("user", "x"), at=OLD)
    await go.create(keys["legacy_new"])
    doc = await go.doc(keys["legacy_old"])
    assert doc is not None
    await redis_client.hset(svc.keys.legacy_sessions(keys["legacy_old"]), "lold",
                            msgspec.structs.replace(doc, updated_at=OLD).to_json())
    return svc, keys


async def test_dry_run_and_run_agree(
    make_service: Callable[..., Awaitable[Any]], redis_client: Any, key_prefix: str,
) -> None:
    """The sessions listed as older than the cutoff are exactly those the run deletes, in both
    layouts; newer ones and other apps (when an app is given) stay."""
    svc, keys = await _sessions(make_service, redis_client, key_prefix)
    cutoff = GoTime.from_datetime(datetime.now(UTC) - parse_age("30d"))
    listed = await find_expired(svc.store, cutoff, app="a")
    assert sorted((e.layout, e.key) for e in listed) == sorted(
        [("hashidx", keys["old"]), ("zset", keys["legacy_old"])])
    assert await delete_expired(svc.store, listed) == 2
    assert await find_expired(svc.store, cutoff, app="a") == []
    for name in ("old", "legacy_old"):
        assert await svc.get_session(keys[name]) is None, name
    for name in ("new", "legacy_new", "other_app_old"):
        assert await svc.get_session(keys[name]) is not None, name
    assert not [k async for k in redis_client.scan_iter(match=f"{key_prefix}:*:a:{{u1}}:old*")]
    everywhere = await find_expired(svc.store, cutoff)
    assert [e.key for e in everywhere] == [keys["other_app_old"]]


@pytest.mark.parametrize(("text", "seconds"), [
    ("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("45s", 45), ("2w", 1209600),
    ("10", 10), ("1.5h", 5400),
])
def test_ages(text: str, seconds: int) -> None:
    """Ages accept s, m, h, d, w suffixes (seconds without one)."""
    assert parse_age(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "0d", "thirty days", "-3d", "3y"])
def test_bad_ages_are_refused(text: str) -> None:
    """Anything else is an InvalidArgumentError."""
    with pytest.raises(InvalidArgumentError):
        parse_age(text)


async def test_cli_dry_run_lists_what_the_run_deletes(
    make_service: Callable[..., Awaitable[Any]], make_settings: Callable[..., Any],
    redis_client: Any, key_prefix: str,
) -> None:
    """`retention --dry-run` lists exactly the sessions `retention --yes` then deletes, and
    deletes nothing itself; without --yes the run changes nothing."""
    svc, keys = await _sessions(make_service, redis_client, key_prefix)
    env = worker_env(make_settings(compat_mode=CompatMode.LEGACY))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sessionstreams.workers.cli", "retention", *args],
            env=env, capture_output=True, text=True, timeout=120, check=False,
            stdin=subprocess.DEVNULL)

    dry = cli("--older-than", "30d", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    listed = sorted(line.removeprefix("would delete ") for line in dry.stdout.splitlines()
                    if line.startswith("would delete "))
    assert len(listed) == 3
    assert await svc.get_session(keys["old"]) is not None  # the dry run deleted nothing
    refused = cli("--older-than", "30d")
    assert refused.returncode == 1
    assert await svc.get_session(keys["old"]) is not None
    run = cli("--older-than", "30d", "--yes")
    assert run.returncode == 0, run.stderr
    deleted = sorted(line.removeprefix("deleting ") for line in run.stdout.splitlines()
                     if line.startswith("deleting "))
    assert deleted == listed
    assert "deleted 3 sessions" in run.stdout
    for name in ("old", "legacy_old", "other_app_old"):
        assert await svc.get_session(keys[name]) is None, name
