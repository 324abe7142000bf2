"""``sessionstreams migrate`` (sessionstreams.workers.migrate) against a real redis-server.

Legacy sessions written in the Go layout are copied into HashIdx with their events, tracks,
summaries, state, generation, request record and the user's old user state, verified, then
removed from the legacy layout; a NONE-mode service then reads exactly what a LEGACY service
read before. Reruns are idempotent; interruptions at each step and concurrent writes lose
nothing; writes still routed to the legacy layout reach the HashIdx copy.
"""

from __future__ import annotations

import asyncio
import os
import sys

import pytest
from legacy_layout import GoLegacyWriter

from sessionstreams.common.compat import Engines
from sessionstreams.common.gotime import GoTime
from sessionstreams.common.hashidx import AppendEntry
from sessionstreams.common.keys import KeySpace
from sessionstreams.common.models import Event, Key, Summary, TrackEvent, UserKey
from sessionstreams.common.scripts import Scripts
from sessionstreams.common.settings import CompatMode
from sessionstreams.common.store import Store
from sessionstreams.workers._tooling import InjectedFault, stop_after
from sessionstreams.workers.migrate import Migrator

# Also on Cluster in every run: the legacy layout puts a whole app in one slot.
pytestmark = pytest.mark.topologies("cluster")

T0 = 1_735_787_045_000_000_000
USERS = ("u1", "u2")
SIDS = ("s0", "s1", "s2")


def msg(role: str, i: int, **kw) -> Event:
    return Event.message(role, f"{role} {i}", timestamp=GoTime(T0 + i * 1_000_000), **kw)


async def _legacy_world(go: GoLegacyWriter) -> list[Key]:
    """Two users with three legacy sessions each: events (two with one timestamp), a track,
    a summary map, binary state; plus each user's old user state."""
    keys = []
    for user in USERS:
        for n, sid in enumerate(SIDS):
            key = Key("app", user, sid)
            keys.append(key)
            await go.create(key, {"bin": b"\xff\x00", "n": str(n).encode()},
                            created=GoTime(T0 - 10**9))
            await go.append(key, msg("user", 1, request_id="q1", id=f"{sid}-a"))
            await go.append(key, msg("assistant", 2, request_id="q1", id=f"{sid}-b"))
            await go.append(key, Event.message("assistant", "tie", id=f"{sid}-c",
                                               timestamp=GoTime(T0 + 2_000_000)))
            for i in range(3):
                await go.track(key, TrackEvent(track="tools", payload=str(i).encode(),
                                               timestamp=GoTime(T0)))
            await go.summaries(key, {"": Summary(summary=f"sum {sid}", updated_at=GoTime(T0))})
        await go.user_state(UserKey("app", user), {"lang": b"fr", "tz": b"CET"})
    return keys


def _view(s) -> tuple:
    """What a reader sees of a session (everything but the routing tag)."""
    return (s.id, s.state, s.events, s.tracks, s.summaries, s.created_at, s.updated_at,
            s.service_meta["incarnation"])


@pytest.fixture
def go(redis_client, key_prefix) -> GoLegacyWriter:
    return GoLegacyWriter(redis_client, key_prefix)


async def _all_keys(redis_client, key_prefix) -> list[str]:
    return sorted([k.decode() async for k in redis_client.scan_iter(match=f"{key_prefix}:*")])


async def test_migrate_copies_everything_and_none_mode_reads_the_same(
    make_service, make_settings, go, redis_client, key_prefix
) -> None:
    """After migrate, a NONE-mode service reads each session exactly as a LEGACY service read
    it before (events, ties in order, tracks, summaries, state, times, generation)."""
    keys = await _legacy_world(go)
    await redis_client.hset(KeySpace(key_prefix).user_state(UserKey("app", "u1")), "tz", b"UTC")
    before_svc = await make_service(compat_mode=CompatMode.LEGACY)
    before = {k: _view(await before_svc.get_session(k)) for k in keys}
    report = await Migrator(Store(make_settings(), client=redis_client)).run("app")
    assert report.complete
    assert (report.users, report.sessions, report.migrated) == (2, 6, 6)
    assert (report.events, report.track_events, report.summaries) == (18, 18, 6)
    after_svc = await make_service(compat_mode=CompatMode.NONE)
    for k in keys:
        got = await after_svc.get_session(k)
        assert got.service_meta["storage_type"] == "hashidx"
        assert _view(got) == before[k]
    assert await after_svc.list_user_states(UserKey("app", "u1")) == {"lang": b"fr",
                                                                      "tz": b"UTC"}
    left = await _all_keys(redis_client, key_prefix)
    assert not [k for k in left if ":sess:" in k or ":event:" in k or ":track:" in k
                or ":userstate:{" in k or ":sesssum:{" in k]
    assert sorted(s.id for s in await after_svc.list_sessions(UserKey("app", "u2"))) == list(
        SIDS)


async def test_dry_run_writes_nothing(make_settings, go, redis_client, key_prefix) -> None:
    """--dry-run counts what would be migrated and leaves every key as it was."""
    await _legacy_world(go)
    before = await _all_keys(redis_client, key_prefix)
    report = await Migrator(Store(make_settings(), client=redis_client)).run("app", dry_run=True)
    assert (report.sessions, report.migrated, report.events) == (6, 0, 18)
    assert await _all_keys(redis_client, key_prefix) == before


class TotalRecorder:
    """A progress stand-in recording the total it had at each counted session."""

    def __init__(self) -> None:
        self.total: int | None = None
        self.seen: list[int | None] = []

    def advance(self, n: int = 1) -> None:
        self.seen += [self.total] * n


async def test_progress_total_is_known_before_the_first_session(make_settings, go,
                                                                redis_client) -> None:
    """The progress total is every legacy session of the app, set before the first one is
    counted (so the time left is right from the start)."""
    await _legacy_world(go)
    progress = TotalRecorder()
    migrator = Migrator(Store(make_settings(), client=redis_client))
    await migrator.run("app", dry_run=True, progress=progress)
    assert progress.seen == [6] * 6


async def test_rerun_is_idempotent(make_settings, go, redis_client, key_prefix) -> None:
    """A second run finds nothing left to migrate and changes nothing."""
    await _legacy_world(go)
    await Migrator(Store(make_settings(), client=redis_client)).run("app")
    snapshot = await _all_keys(redis_client, key_prefix)
    report = await Migrator(Store(make_settings(), client=redis_client)).run("app")
    assert (report.sessions, report.migrated) == (0, 0)
    assert await _all_keys(redis_client, key_prefix) == snapshot


@pytest.mark.parametrize("point", ["imported", "retired"])
async def test_interrupted_migration_loses_nothing_and_a_rerun_completes(
    make_service, make_settings, go, redis_client, point
) -> None:
    """A run stopped after a session's copy (before or after the legacy copy is removed)
    leaves every session readable in LEGACY mode; the rerun migrates the rest, no event
    doubled."""
    keys = await _legacy_world(go)
    legacy_svc = await make_service(compat_mode=CompatMode.LEGACY)
    before = {k: _view(await legacy_svc.get_session(k)) for k in keys}
    store = Store(make_settings(), client=redis_client)
    with pytest.raises(InjectedFault):
        await Migrator(store, fault=stop_after(point, 3)).run("app")
    for k in keys:
        assert _view(await legacy_svc.get_session(k)) == before[k]
    report = await Migrator(Store(make_settings(), client=redis_client)).run("app")
    assert report.complete
    assert report.migrated == (4 if point == "imported" else 3)
    none_svc = await make_service(compat_mode=CompatMode.NONE)
    for k in keys:
        assert _view(await none_svc.get_session(k)) == before[k]


async def test_a_write_during_migration_is_carried_over(
    make_service, make_settings, go, redis_client, key_prefix
) -> None:
    """A legacy write landing between the copy and the removal is detected: the session is
    copied again, in the same run, and the write is in the HashIdx copy."""
    keys = await _legacy_world(go)
    target = keys[0]
    legacy_svc = await make_service(compat_mode=CompatMode.LEGACY)
    s = await legacy_svc.get_session(target)
    seen: list[str] = []

    async def write_between(point: str, key: Key) -> None:
        seen.append(point)
        if point == "imported" and key == target and seen.count("imported") == 1:
            await legacy_svc.append_event(s, msg("user", 9, id="late"))

    store = Store(make_settings(), client=redis_client)
    report = await Migrator(store, fault=write_between).run("app", "u1")
    assert (report.migrated, report.complete) == (3, True)
    assert seen.count("imported") == 4  # the target was copied twice
    none_svc = await make_service(compat_mode=CompatMode.NONE)
    assert (await none_svc.get_session(target)).events[-1].id == "late"
    assert not await redis_client.exists(KeySpace(key_prefix).legacy_events(target))


class _WriteNow(Exception):
    """Raised by a fault hook to pause a migration while a test writes."""


async def test_concurrent_writer_forces_a_fresh_copy(
    make_service, make_settings, go, redis_client
) -> None:
    """Appends racing with the migration (between copy and removal) are never lost."""
    keys = await _legacy_world(go)
    legacy_svc = await make_service(compat_mode=CompatMode.LEGACY)
    session = await legacy_svc.get_session(keys[0])
    written: list[str] = []

    async def writer() -> None:
        for i in range(40):
            e = msg("assistant", 100 + i, id=f"w{i}")
            await legacy_svc.append_event(session, e)
            written.append(e.id)
            await asyncio.sleep(0)

    store = Store(make_settings(), client=redis_client)
    report, _ = await asyncio.gather(Migrator(store).run("app"), writer())
    assert report.complete or report.busy == [keys[0]]
    reader = await make_service(compat_mode=CompatMode.LEGACY)
    ids = [e.id for e in (await reader.get_session(keys[0], num_events=100)).events]
    assert [i for i in ids if i.startswith("w")] == written


async def test_writes_routed_to_legacy_after_migration_reach_the_copy(
    make_service, make_settings, go, redis_client, key_prefix
) -> None:
    """An agent holding a zset-tagged session keeps writing after the migration: events,
    tracks and state land in the HashIdx copy; an entry of another incarnation does not."""
    keys = await _legacy_world(go)
    legacy_svc = await make_service(compat_mode=CompatMode.LEGACY)
    s = await legacy_svc.get_session(keys[0])
    assert s.service_meta["storage_type"] == "zset"
    await Migrator(Store(make_settings(), client=redis_client)).run("app")
    await legacy_svc.append_event(s, msg("user", 7, id="after", state_delta={"k": b"v"}))
    await legacy_svc.append_track_event(
        s, TrackEvent(track="tools", payload=b"9", timestamp=GoTime(T0 + 1)))
    await legacy_svc.update_session_state(keys[0], {"x": b"1"})
    none_svc = await make_service(compat_mode=CompatMode.NONE)
    got = await none_svc.get_session(keys[0])
    assert got.events[-1].id == "after"
    assert (got.state["k"], got.state["x"]) == (b"v", b"1")
    assert [t.payload for t in got.tracks["tools"].events][-1] == b"9"
    engines = Engines(redis_client, KeySpace(key_prefix), Scripts(), CompatMode.LEGACY)
    e = msg("user", 8, id="stale")
    entry = AppendEntry(rid="old-incarnation", event_id=e.id, event_json=e.to_json(),
                        ts_ns=e.timestamp.unix_ns, is_user=True, producer_ts="",
                        session_delta=b"")
    statuses = await engines.legacy.append(keys[0], [entry], ttl_ms=0, storage_limit=0,
                                           user_state_ttl_ms=0, incarnation="another")
    assert statuses == ["superseded"]


async def test_session_without_generation_keeps_its_incarnation(
    make_service, make_settings, go, redis_client, key_prefix
) -> None:
    """An old legacy record without generation (incarnation = its createdAt text, here with
    an offset) keeps that incarnation in HashIdx: entries in flight still apply."""
    key = Key("app", "u1", "old")
    created = "2025-01-02T11:04:05.1234+08:00"
    await go.create(key, {"k": b"v"}, generation="", created=GoTime.parse(created))
    report = await Migrator(Store(make_settings(), client=redis_client)).run("app")
    assert report.migrated == 1
    engines = Engines(redis_client, KeySpace(key_prefix), Scripts(), CompatMode.LEGACY)
    e = msg("user", 1, id="inflight")
    entry = AppendEntry(rid="r", event_id=e.id, event_json=e.to_json(),
                        ts_ns=e.timestamp.unix_ns, is_user=True, producer_ts="",
                        session_delta=b"")
    statuses = await engines.legacy.append(key, [entry], ttl_ms=0, storage_limit=0,
                                           user_state_ttl_ms=0, incarnation=created)
    assert statuses == ["applied"]
    got = await (await make_service(compat_mode=CompatMode.NONE)).get_session(key)
    assert (got.state["k"], got.created_at, got.events[-1].id) == (
        b"v", GoTime.parse(created), "inflight")


async def test_request_record_survives_migration(make_settings, go, redis_client,
                                                 key_prefix) -> None:
    """A write applied to the legacy copy before migration is a duplicate when replayed
    afterwards (the request record is carried over)."""
    keys = await _legacy_world(go)
    engines = Engines(redis_client, KeySpace(key_prefix), Scripts(), CompatMode.LEGACY)
    e = msg("user", 5, id="once")
    entry = AppendEntry(rid="rid-1", event_id=e.id, event_json=e.to_json(),
                        ts_ns=e.timestamp.unix_ns, is_user=True, producer_ts="",
                        session_delta=b"")
    opts = {"ttl_ms": 0, "storage_limit": 0, "user_state_ttl_ms": 0}
    assert await engines.legacy.append(keys[0], [entry], **opts) == ["applied"]
    await Migrator(Store(make_settings(), client=redis_client)).run("app")
    assert await engines.legacy.append(keys[0], [entry], **opts) == ["duplicate"]
    assert await engines.hashidx.append(keys[0], [entry], **opts) == ["duplicate"]


async def test_conflicting_hashidx_copy_is_left_alone(make_service, make_settings, go,
                                                      redis_client, key_prefix) -> None:
    """A session present in both layouts with HashIdx events is reported, not overwritten;
    the user's other sessions migrate and the old user state stays for it."""
    keys = await _legacy_world(go)
    none_svc = await make_service(compat_mode=CompatMode.NONE)
    clash = await none_svc.create_session(keys[0])
    await none_svc.append_event(clash, msg("user", 3, id="hashidx-only"))
    report = await Migrator(Store(make_settings(), client=redis_client)).run("app", "u1")
    assert report.conflicts == [keys[0]]
    assert report.migrated == 2
    assert not report.complete
    assert [e.id for e in (await none_svc.get_session(keys[0])).events] == ["hashidx-only"]
    assert len(await go.events(keys[0])) == 3
    k = KeySpace(key_prefix)
    assert await redis_client.hgetall(k.legacy_user_state(UserKey("app", "u1")))


async def test_session_deleted_during_migration_is_not_resurrected(
    make_service, make_settings, go, redis_client, key_prefix
) -> None:
    """A session deleted after its copy was made (before removal) ends deleted everywhere."""
    await _legacy_world(go)
    legacy_svc = await make_service(compat_mode=CompatMode.LEGACY)
    deleted: list[Key] = []

    def during(point: str, key: Key) -> None:
        if point == "imported" and not deleted:
            deleted.append(key)
            raise _WriteNow

    migrator = Migrator(Store(make_settings(), client=redis_client), fault=during)
    with pytest.raises(_WriteNow):
        await migrator.run("app", "u1")
    # Between runs: the HashIdx copy exists, the legacy one too; delete via the LEGACY service
    # deletes both, then a rerun must not bring it back.
    await legacy_svc.delete_session(deleted[0])
    migrator.fault = None
    await migrator.run("app", "u1")
    none_svc = await make_service(compat_mode=CompatMode.NONE)
    assert await none_svc.get_session(deleted[0]) is None
    assert not await redis_client.exists(KeySpace(key_prefix).event_data(deleted[0]))


async def test_cli_migrate_dry_run_fault_and_rerun(go, redis_client, key_prefix,
                                                   redis_target) -> None:
    """`sessionstreams migrate`: --dry-run reports, without --yes (and no terminal) nothing is
    changed (exit 1), an injected fault exits 1, the rerun completes (exit 0); a conflict
    exits 3."""
    await _legacy_world(go)
    env = {**os.environ, "SESSIONSTREAMS_KEY_PREFIX": key_prefix}
    base = ("--url", redis_target.url, "migrate", "--app", "app", "--yes")
    code, out, _ = await _cli(env, *base, "--dry-run")
    assert (code, "would migrate 6" in out) == (0, True)
    before = await _all_keys(redis_client, key_prefix)
    code, out, err = await _cli(env, *base[:-1])
    assert (code, out) == (1, "")
    assert "pass --yes to confirm (nothing was changed)" in err
    assert await _all_keys(redis_client, key_prefix) == before
    code, _, err = await _cli({**env, "SESSIONSTREAMS_ADMIN_FAULT": "imported:2"}, *base)
    assert code == 1
    assert "injected fault" in err
    code, out, err = await _cli(env, *base)
    assert code == 0, err
    assert out.startswith("migrate: 2 users, ")
    await go.create(Key("app", "u1", "late"))
    keys = KeySpace(key_prefix)
    await redis_client.set(keys.meta(Key("app", "u1", "late")), b'{"id":"late"}')
    await redis_client.zadd(keys.event_index(Key("app", "u1", "late")), {"x": 1})
    code, out, _ = await _cli(env, *base)
    assert code == 3
    assert "conflict" in out


async def _cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sessionstreams.workers.cli", *args, env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()
