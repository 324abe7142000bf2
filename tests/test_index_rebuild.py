"""``sessionstreams index rebuild`` (sessionstreams.workers.index_tools) against a real
redis-server.

Sessions created without the user session index are invisible to index-based listing
(reference §12.19); the rebuild back-fills the index, prunes stale entries, is idempotent,
resumable after an interruption, and safe while sessions are created and deleted.
"""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from sessionstreams.common.keys import KeySpace
from sessionstreams.common.models import Key, SessionIndexEntry, SessionMeta, UserKey
from sessionstreams.common.scripts import Scripts
from sessionstreams.common.settings import CompatMode
from sessionstreams.workers._tooling import InjectedFault, stop_after
from sessionstreams.workers.index_tools import rebuild_index


async def _sessions(svc, app: str, user: str, n: int, start: int = 0) -> list[Key]:
    keys = [Key(app, user, f"s{i:03d}") for i in range(start, start + n)]
    for k in keys:
        await svc.create_session(k)
    return keys


async def _index(redis_client, keys: KeySpace, user: UserKey) -> dict[str, bytes]:
    raw = await redis_client.hgetall(keys.session_index(user))
    return {k.decode(): v for k, v in raw.items()}


async def test_rebuild_makes_unindexed_sessions_listable(make_service, redis_client,
                                                         key_prefix) -> None:
    """Sessions created without the index are listed by an index service after a rebuild,
    with entries carrying the meta's createdAt as Go writes them."""
    plain = await make_service(compat_mode=CompatMode.NONE)
    indexed = await make_service(compat_mode=CompatMode.NONE, enable_user_session_index=True)
    created = await _sessions(plain, "app", "u", 5)
    assert await indexed.list_sessions(UserKey("app", "u")) == []
    keys = KeySpace(key_prefix)
    report = await rebuild_index(redis_client, keys, Scripts(), "app")
    assert (report.scanned, report.added, report.present) == (5, 5, 0)
    listed = await indexed.list_sessions(UserKey("app", "u"))
    assert sorted(s.id for s in listed) == [k.session_id for k in created]
    for k in created:
        meta = SessionMeta.from_json(await redis_client.get(keys.meta(k)))
        entry = (await _index(redis_client, keys, UserKey("app", "u")))[k.session_id]
        assert entry == SessionIndexEntry(created_at=meta.created_at).to_json()


async def test_rebuild_is_idempotent_and_prunes_stale_entries(make_service, redis_client,
                                                              key_prefix) -> None:
    """A second rebuild adds nothing; index entries without a session are removed."""
    svc = await make_service(compat_mode=CompatMode.NONE)
    await _sessions(svc, "app", "u", 4)
    keys = KeySpace(key_prefix)
    await rebuild_index(redis_client, keys, Scripts(), "app")
    await redis_client.hset(keys.session_index(UserKey("app", "gone")), "ghost", b"{}")
    await redis_client.hset(keys.session_index(UserKey("app", "u")), "ghost", b"{}")
    report = await rebuild_index(redis_client, keys, Scripts(), "app")
    assert (report.added, report.present, report.pruned) == (0, 4, 2)
    assert sorted(await _index(redis_client, keys, UserKey("app", "u"))) == [
        "s000", "s001", "s002", "s003"]


async def test_rebuild_progress_total_comes_from_a_counting_pass(make_service, redis_client,
                                                                  key_prefix) -> None:
    """The progress total is set (by a counting SCAN) before the first session is indexed."""
    svc = await make_service(compat_mode=CompatMode.NONE)
    await _sessions(svc, "app", "u1", 2)
    await _sessions(svc, "app", "u2", 3)
    seen: list[int | None] = []

    class Recorder:
        total: int | None = None

        def advance(self, n: int = 1) -> None:
            seen.extend([self.total] * n)

    await rebuild_index(redis_client, KeySpace(key_prefix), Scripts(), "app",
                        progress=Recorder())
    assert seen == [5] * 5


async def test_rebuild_limited_to_one_user(make_service, redis_client, key_prefix) -> None:
    """--user indexes only that user's sessions."""
    svc = await make_service(compat_mode=CompatMode.NONE)
    await _sessions(svc, "app", "u1", 2)
    await _sessions(svc, "app", "u2", 3)
    keys = KeySpace(key_prefix)
    report = await rebuild_index(redis_client, keys, Scripts(), "app", "u2")
    assert report.added == 3
    assert await _index(redis_client, keys, UserKey("app", "u1")) == {}
    assert len(await _index(redis_client, keys, UserKey("app", "u2"))) == 3


async def test_rebuild_escapes_glob_characters(make_service, redis_client, key_prefix) -> None:
    """App and user ids with glob characters match only themselves."""
    svc = await make_service(compat_mode=CompatMode.NONE)
    await _sessions(svc, "a*", "u?", 2)
    await _sessions(svc, "ab", "u1", 2)
    await _sessions(svc, "a*", "ux", 1)
    keys = KeySpace(key_prefix)
    report = await rebuild_index(redis_client, keys, Scripts(), "a*", "u?")
    assert report.added == 2
    assert await _index(redis_client, keys, UserKey("a*", "ux")) == {}
    report = await rebuild_index(redis_client, keys, Scripts(), "a*")
    assert (report.added, report.present) == (1, 2)
    assert await _index(redis_client, keys, UserKey("ab", "u1")) == {}


async def test_rebuild_interrupted_then_rerun(make_service, redis_client, key_prefix) -> None:
    """A rebuild stopped after some sessions leaves them indexed; a rerun finishes the rest."""
    svc = await make_service(compat_mode=CompatMode.NONE)
    created = await _sessions(svc, "app", "u", 7)
    keys = KeySpace(key_prefix)
    with pytest.raises(InjectedFault):
        await rebuild_index(redis_client, keys, Scripts(), "app", batch_size=2,
                            fault=stop_after("indexed", 3))
    assert len(await _index(redis_client, keys, UserKey("app", "u"))) == 4
    report = await rebuild_index(redis_client, keys, Scripts(), "app")
    assert report.added + report.present == 7
    assert sorted(await _index(redis_client, keys, UserKey("app", "u"))) == [
        k.session_id for k in created]


async def test_rebuild_while_sessions_come_and_go(make_service, redis_client,
                                                  key_prefix) -> None:
    """Creates and deletes running during the rebuild leave the index equal to the sessions
    that exist: no entry for a deleted session, none missing for a kept one."""
    plain = await make_service(compat_mode=CompatMode.NONE)
    indexed = await make_service(compat_mode=CompatMode.NONE, enable_user_session_index=True)
    old = await _sessions(plain, "app", "u", 120)
    keys = KeySpace(key_prefix)

    async def traffic() -> None:
        for i in range(30):
            await indexed.delete_session(old[i * 4])
            await indexed.create_session(Key("app", "u", f"n{i:03d}"))
            await asyncio.sleep(0)

    await asyncio.gather(rebuild_index(redis_client, keys, Scripts(), "app"), traffic())
    existing = {s.id for s in await plain.list_sessions(UserKey("app", "u"), only_meta=True)}
    assert len(existing) == 120
    assert set(await _index(redis_client, keys, UserKey("app", "u"))) == existing


async def test_cli_index_rebuild(make_service, redis_client, key_prefix, redis_target) -> None:
    """`sessionstreams index rebuild --app A` indexes the sessions and reports them; an
    injected fault stops it with an error and a rerun completes."""
    svc = await make_service(compat_mode=CompatMode.NONE)
    await _sessions(svc, "app", "u", 3)
    env = {**os.environ, "SESSIONSTREAMS_KEY_PREFIX": key_prefix,
           "SESSIONSTREAMS_ADMIN_FAULT": "indexed:2"}
    code, out, err = await _cli(env, "--url", redis_target.url, "index", "rebuild",
                                "--app", "app")
    assert code == 1
    assert "injected fault" in err
    del env["SESSIONSTREAMS_ADMIN_FAULT"]
    code, out, err = await _cli(env, "--url", redis_target.url, "index", "rebuild",
                                "--app", "app")
    assert code == 0, err
    assert out.startswith("index rebuild: 3 sessions scanned, ")
    assert len(await _index(redis_client, KeySpace(key_prefix), UserKey("app", "u"))) == 3


async def _cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sessionstreams.workers.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()
