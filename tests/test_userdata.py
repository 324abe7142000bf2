"""A user's data, whole: export, erase and import on real Redis (standalone, Sentinel, Cluster).

The user under test has sessions in both layouts, events, a track, a summary, session and
user state, the session index, and writes still in flight (in a shard stream, in a worker's
pending list, in a dead-letter stream). Another user of the same app, and a user of the same
id in another app, must come out byte-identical.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from legacy_layout import GoLegacyWriter
from workers_harness import eventually, worker_env

from sessionstreams.common.entries import FIELD, StreamEntry, encode_entry
from sessionstreams.common.errors import PersistTimeoutError
from sessionstreams.common.models import Event, Key, TrackEvent, UserKey
from sessionstreams.common.settings import CompatMode, Settings
from sessionstreams.common.shards import ShardKeys, shard_of
from sessionstreams.common.summarizers import ExtractiveSummarizer
from sessionstreams.producer import SessionService

pytestmark = pytest.mark.topologies("cluster", "sentinel")

SHARDS = 4


def _settings(make_settings: Callable[..., Settings], **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "compat_mode": CompatMode.LEGACY, "enable_user_session_index": True,
        "async_persister_num": SHARDS, "summarizer": ExtractiveSummarizer(),
        "lease_ttl_s": 1.0, "heartbeat_interval_s": 0.2, "block_ms": 100,
    }
    values.update(overrides)
    return make_settings(**values)


async def _fill(svc: Any, client: Any, prefix: str, user: UserKey, marker: str) -> None:
    """Sessions of ``user`` in both layouts with every kind of data, marked with ``marker``."""
    s = await svc.create_session(Key(user.app_name, user.user_id, "s1"),
                                 state={"topic": marker.encode()})
    await svc.append_event(s, Event.message("user", f"hello {marker}"))
    await svc.append_event(s, Event.message("assistant", f"hi {marker}. How can I help?"))
    payload = msgspec.json.encode({"q": marker})
    await svc.append_track_event(s, TrackEvent(track="tool", payload=payload))
    await svc.create_session_summary(s)
    await svc.update_user_state(user, {"name": marker.encode()})
    go = GoLegacyWriter(client, prefix)
    legacy = Key(user.app_name, user.user_id, "old1")
    await go.create(legacy, {"lang": b"fr"})
    await go.append(legacy, Event.message("user", f"legacy {marker}"))
    await go.track(legacy, TrackEvent(track="tool", payload=payload))
    await go.user_state(user, {"legacy_name": marker.encode()})


async def _in_flight(svc_async: Any, client: Any, prefix: str, user: UserKey,
                     marker: str) -> None:
    """Writes of ``user`` still in the streams: queued, taken by a (dead) worker, and one
    in a dead-letter stream."""
    s = await svc_async.get_session(Key(user.app_name, user.user_id, "s1"))
    await svc_async.append_event(s, Event.message("user", f"queued {marker}"))
    await svc_async.append_event(s, Event.message("user", f"taken {marker}"))
    sk = ShardKeys(prefix, shard_of(s.key, SHARDS), SHARDS)
    # A worker read the last entry into its pending list and died.
    await client.xreadgroup("persist", str(sk.shard), {sk.stream: ">"}, count=1)
    letter = StreamEntry(kind="state", app=user.app_name, user=user.user_id, sid="s1")
    await client.xadd(sk.dlq, {FIELD: encode_entry(letter), "error": marker.encode()})


async def _keyspace(client: Any, prefix: str) -> dict[str, Any]:
    """Every key under the test's prefix with its type and value (streams as entry lists)."""
    out: dict[str, Any] = {}
    async for raw in client.scan_iter(match=f"{prefix}:*", count=500):
        name = raw.decode()
        kind = (await client.type(name)).decode()
        if kind == "string":
            value: Any = await client.get(name)
        elif kind == "hash":
            value = sorted((await client.hgetall(name)).items())
        elif kind == "zset":
            value = await client.zrange(name, 0, -1, withscores=True)
        elif kind == "set":
            value = sorted(await client.smembers(name))
        elif kind == "stream":
            value = [(i, sorted(f.items())) for i, f in await client.xrange(name)]
        else:
            value = kind
        out[name] = (kind, value)
    return out


def _mentions(space: dict[str, Any], text: str) -> list[str]:
    needle = text.encode()
    return [name for name, value in space.items()
            if text in name or needle in repr(value).encode()]


async def _prepare(
    make_settings: Callable[..., Settings], make_service: Callable[..., Awaitable[Any]],
    redis_client: Any, key_prefix: str,
) -> tuple[Any, UserKey, str]:
    ana = UserKey("app", f"ana{uuid.uuid4().hex[:6]}")
    marker = f"private-{uuid.uuid4().hex}"
    settings = _settings(make_settings)
    svc = await make_service(**{f: getattr(settings, f) for f in (
        "compat_mode", "enable_user_session_index", "async_persister_num", "summarizer")})
    await _fill(svc, redis_client, key_prefix, ana, marker)
    for other in (UserKey("app", "bob"), UserKey("app2", ana.user_id)):
        await _fill(svc, redis_client, key_prefix, other, f"other-{uuid.uuid4().hex}")
    await svc.update_app_state("app", {"motd": b"shared by everyone"})
    # No worker runs: the streamed writes stay in flight (closed without waiting for them).
    async with SessionService(settings.replace(enable_async_persist=True, summarizer=None)
                              ) as svc_async:
        await _in_flight(svc_async, redis_client, key_prefix, ana, marker)
        await _in_flight(svc_async, redis_client, key_prefix, UserKey("app", "bob"), "bob-flight")
        with contextlib.suppress(PersistTimeoutError):
            await svc_async.close(timeout=0)
    return svc, ana, marker


async def test_export_erase_import(
    make_settings: Callable[..., Settings], make_service: Callable[..., Awaitable[Any]],
    redis_client: Any, key_prefix: str,
) -> None:
    """Export holds every session (both layouts), the user's state and the writes in flight;
    erase leaves nothing of the user in any key or stream entry and other users' data
    byte-identical; import brings the user back equal to the export."""
    svc, ana, marker = await _prepare(make_settings, make_service, redis_client, key_prefix)
    records = [r async for r in svc.export_user(ana)]
    kinds = [r["kind"] for r in records]
    assert kinds[0] == "header"
    assert kinds[-1] == "end"
    sessions = {(r["layout"], r["id"]) for r in records if r["kind"] == "session"}
    assert sessions == {("hashidx", "s1"), ("zset", "old1")}
    exported_keys = {k["key"] for r in records if "keys" in r for k in r["keys"]}
    for part in ("hashidx:meta:", "hashidx:evtdata:", "hashidx:sesssum:", "hashidx:trkdata:",
                 "hashidx:userstate:", "hashidx:sessidx:", "event:{app}:", "sess:{app}:",
                 "userstate:{app}:", "track:{app}:"):
        assert any(part in k for k in exported_keys), part
    assert sum(r["kind"] == "in_flight" for r in records) == 3
    assert not any("bob" in k or "app2" in k for k in exported_keys)

    before = await _keyspace(redis_client, key_prefix)
    assert _mentions(before, marker)
    report = await svc.erase_user(ana)
    assert report.stream_entries == 3
    assert report.sessions >= {"s1", "old1"}
    after = await _keyspace(redis_client, key_prefix)
    assert _mentions(after, marker) == []
    assert [n for n in after if ana.user_id in n and "app2" not in n] == []
    for name, value in before.items():
        if value[0] == "stream":
            kept = [e for e in value[1] if marker.encode() not in repr(e).encode()
                    and ana.user_id.encode() not in repr(e).encode()]
            assert after[name][1] == kept if kept else name not in after or after[name][1] == []
        elif not _mentions({name: value}, ana.user_id) or "app2" in name:
            assert after.get(name) == value, name  # other users and the app state: intact

    done = await svc.import_user(records)
    assert done.keys == len(exported_keys)
    assert done.skipped_in_flight == 3
    again = [r async for r in svc.export_user(ana)]

    def stored(recs: list[dict[str, Any]]) -> list[Any]:
        return [(r["kind"], r.get("id"), [(k["key"], k["type"], k["value"], k["ttl_ms"] > 0)
                                          for k in r["keys"]])
                for r in recs if "keys" in r]

    assert stored(again) == stored(records)
    s = await svc.get_session(Key("app", ana.user_id, "s1"))
    assert s is not None
    assert s.state["topic"] == marker.encode()


async def test_interrupted_erase_reruns_to_completion(
    make_settings: Callable[..., Settings], make_service: Callable[..., Awaitable[Any]],
    redis_client: Any, key_prefix: str,
) -> None:
    """An erase stopped after its first batch of keys leaves some; a rerun removes the rest."""
    from sessionstreams.common.userdata import UserData

    svc, ana, marker = await _prepare(make_settings, make_service, redis_client, key_prefix)

    class Stop(Exception):
        pass

    def stop_after_first(step: str) -> None:
        if step == "keys":
            raise Stop

    with pytest.raises(Stop):
        await UserData(svc.store).erase(ana, batch=3, on_step=stop_after_first, settle_s=0.2)
    assert _mentions(await _keyspace(redis_client, key_prefix), marker)
    report = await svc.erase_user(ana)
    assert report.keys > 0
    assert _mentions(await _keyspace(redis_client, key_prefix), marker) == []
    assert (await svc.erase_user(ana)).keys == 0  # nothing left: a third run is a no-op


async def test_erased_pending_entries_are_never_applied(
    pipeline_settings: Callable[..., Settings], start_worker: Callable[..., Any],
    make_service: Callable[..., Awaitable[Any]], redis_client: Any, key_prefix: str,
) -> None:
    """Entries of an erased user that a worker had taken are acknowledged as erased by the
    next owner, never applied: no key of the user comes back."""
    settings = pipeline_settings(async_persister_num=SHARDS)
    svc = await make_service(**{f: getattr(settings, f) for f in (
        "enable_async_persist", "async_persister_num", "lease_ttl_s", "heartbeat_interval_s")})
    ana = UserKey("app", f"ana{uuid.uuid4().hex[:6]}")
    s = await svc.create_session(Key("app", ana.user_id, "s1"))
    for i in range(5):
        await svc.append_event(s, Event.message("user", f"m{i}"))
    sk = ShardKeys(key_prefix, shard_of(s.key, SHARDS), SHARDS)
    await redis_client.xreadgroup("persist", str(sk.shard), {sk.stream: ">"}, count=3)
    report = await svc.erase_user(ana)
    assert report.stream_entries == 5
    start_worker(settings)

    async def drained() -> bool:
        info = await redis_client.xpending(sk.stream, "persist")
        return int(info["pending"]) == 0

    await eventually(drained, 30, "the erased entries acknowledged")
    assert await redis_client.xlen(sk.dlq) == 0
    keys = [k async for k in redis_client.scan_iter(match=f"{key_prefix}:*{ana.user_id}*")]
    assert keys == []


def _cli(*args: str, settings: Settings) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sessionstreams.workers.cli", *args],
                          env=worker_env(settings), capture_output=True, text=True,
                          timeout=120, check=False, stdin=subprocess.DEVNULL)


async def test_cli_export_erase_import(
    make_settings: Callable[..., Settings], make_service: Callable[..., Awaitable[Any]],
    redis_client: Any, key_prefix: str, tmp_path: Path,
) -> None:
    """The user commands: export to a file, erase only with --yes (with a summary), and
    import the file back."""
    svc, ana, marker = await _prepare(make_settings, make_service, redis_client, key_prefix)
    settings = _settings(make_settings)
    out = tmp_path / "ana.jsonl"
    who = ("--app", ana.app_name, "--user", ana.user_id)
    done = _cli("user", "export", *who, "--out", str(out), settings=settings)
    assert done.returncode == 0, done.stderr
    assert "exported 2 sessions" in done.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines[0]["kind"] == "header"
    assert marker in out.read_text()

    refused = _cli("user", "erase", *who, settings=settings)
    assert refused.returncode == 1
    assert "--yes" in refused.stderr
    assert _mentions(await _keyspace(redis_client, key_prefix), marker)

    erased = _cli("user", "erase", *who, "--yes", settings=settings)
    assert erased.returncode == 0, erased.stderr
    assert erased.stdout.startswith("erased ")
    assert _mentions(await _keyspace(redis_client, key_prefix), marker) == []

    loaded = _cli("user", "import", "--in", str(out), settings=settings)
    assert loaded.returncode == 0, loaded.stderr
    assert "imported" in loaded.stdout
    again = _cli("user", "import", "--in", str(out), settings=settings)
    assert again.returncode == 1
    assert "exist already" in again.stderr
    s = await svc.get_session(Key(ana.app_name, ana.user_id, "s1"))
    assert s is not None
    assert s.state["topic"] == marker.encode()
