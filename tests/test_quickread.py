"""Reads of a remembered event window as one MULTI/EXEC of plain commands (common.quickread):
always the session the load script returns, on every change another client can make."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid

import pytest
from legacy_layout import GoLegacyWriter
from redis.exceptions import RedisError

from sessionstreams.common.errors import SessionStoreError
from sessionstreams.common.models import Event, Key, Session, TrackEvent
from sessionstreams.common.quickread import MAX_WINDOW_EVENTS, WindowCache
from sessionstreams.common.settings import CompatMode
from sessionstreams.producer import SessionService

EVERY_TOPOLOGY = pytest.mark.topologies("cluster", "sentinel")


async def _pair(make_service, compat: CompatMode = CompatMode.NONE, **overrides):
    """A service reading through remembered windows, and one that always runs the script."""
    quick = await make_service(compat_mode=compat, **overrides)
    plain = await make_service(compat_mode=compat, **overrides)
    plain.store.hashidx.windows = WindowCache(capacity=0)
    return quick, plain


def _same(got: Session | None, want: Session | None) -> None:
    assert (got is None) == (want is None)
    if got is None or want is None:
        return
    assert [e.to_json() for e in got.events] == [e.to_json() for e in want.events]
    assert got.state == want.state
    assert got.summaries == want.summaries
    assert got.tracks == want.tracks
    assert (got.created_at, got.updated_at) == (want.created_at, want.updated_at)
    assert got == want


async def _both(quick, plain, key: Key, num: int, *, exact: bool = False) -> Session | None:
    got = await quick.get_session(key, num_events=num, exact_window=exact)
    want = await plain.get_session(key, num_events=num, exact_window=exact)
    _same(got, want)
    return got


def _single_node(svc) -> bool:
    return bool(svc.store.hashidx.single_node)


@pytest.mark.parametrize("compat", list(CompatMode), ids=lambda m: m.name)
@EVERY_TOPOLOGY
async def test_reads_after_own_appends_are_transactions_equal_to_the_script(
    make_service, redis_client, compat
) -> None:
    """A session read, appended to and read again by one service is read without the
    script on a single node (Cluster keeps the script), and equals the script's read; with
    legacy data to consult too (the transaction then also checks the legacy layout)."""
    quick, plain = await _pair(make_service, compat, session_event_storage_limit=0)
    session = await quick.create_session(Key("app", "u", "own"), state={"k": b"v"})
    for i in range(30):
        role = "user" if i % 2 == 0 else "assistant"
        await quick.append_event(session, Event.message(
            role, f"m{i}", state_delta={"turn": str(i).encode()}))
        if i % 10 == 0:
            await quick.append_track_event(session, TrackEvent(track="t", payload=b'{"n":1}'))
        got = await _both(quick, plain, session.key, 8)
        assert got is not None
        assert got.events[-1].response is not None
    windows = quick.store.hashidx.windows
    if compat is CompatMode.TRANSITION:  # sessions are created in the legacy layout
        assert session.service_meta["storage_type"] == "zset"
        assert windows.hits == 0
    elif _single_node(quick):
        assert windows.hits >= 25
        assert windows.misses == 0
        stats = await redis_client.info("commandstats")
        assert stats["cmdstat_exec"]["calls"] >= 25
    else:
        assert windows.hits == 0


@EVERY_TOPOLOGY
async def test_a_write_by_another_service_is_read_and_counted_as_a_miss(make_service) -> None:
    """Events another service appended make the remembered ids stale: the transaction sees
    it, the script answers, and the next read is a transaction again."""
    quick, plain = await _pair(make_service)
    session = await quick.create_session(Key("app", "u", "foreign"))
    other = await plain.get_session(session.key)
    assert other is not None
    await quick.append_event(session, Event.message("user", "first"))
    await _both(quick, plain, session.key, 5)
    await plain.append_event(other, Event.message("assistant", "from elsewhere"))
    got = await _both(quick, plain, session.key, 5)
    assert got is not None
    assert [e.author for e in got.events][-1] == other.events[-1].author
    assert len(got.events) == 2
    windows = quick.store.hashidx.windows
    if _single_node(quick):
        assert windows.misses == 1
        hits = windows.hits
        for _ in range(3):  # one read skipped after the miss, then transactions again
            await _both(quick, plain, session.key, 5)
        assert windows.hits == hits + 2


@pytest.mark.parametrize("exact", [False, True])
@EVERY_TOPOLOGY
async def test_a_window_without_user_message_reads_like_the_script(make_service, exact) -> None:
    """Without exact_window, a window holding no user message gets the newest earlier one
    prepended, exactly as the load script does; with it, the window is as stored."""
    quick, plain = await _pair(make_service)
    session = await quick.create_session(Key("app", "u", "no-user"))
    await quick.append_event(session, Event.message("user", "question"))
    for i in range(6):
        await quick.append_event(session, Event.message("assistant", f"part {i}"))
        got = await _both(quick, plain, session.key, 3, exact=exact)
        assert got is not None
    assert next(e.author for e in got.events) == ("assistant" if exact else "user")


@EVERY_TOPOLOGY
async def test_deleted_and_recreated_session_is_read_as_stored(make_service) -> None:
    """A session deleted (by another service) reads as missing; recreated under the same id
    it reads with its new events only."""
    quick, plain = await _pair(make_service)
    key = Key("app", "u", "again")
    session = await quick.create_session(key)
    await quick.append_event(session, Event.message("user", "old"))
    await _both(quick, plain, key, 5)
    await plain.delete_session(key)
    assert await _both(quick, plain, key, 5) is None
    fresh = await plain.create_session(key)
    assert await _both(quick, plain, key, 5) is not None
    await plain.append_event(fresh, Event.message("user", "new"))
    got = await _both(quick, plain, key, 5)
    assert got is not None
    assert len(got.events) == 1


@EVERY_TOPOLOGY
async def test_trimmed_storage_reads_the_kept_events(make_service) -> None:
    """With a storage limit below the read window, appends trim the oldest events; reads
    return exactly the kept ones."""
    quick, plain = await _pair(make_service, session_event_storage_limit=4)
    session = await quick.create_session(Key("app", "u", "trim"))
    for i in range(12):
        await quick.append_event(session, Event.message("user" if i % 2 else "assistant",
                                                        f"m{i}"))
        got = await _both(quick, plain, session.key, 6, exact=True)
        assert got is not None
        assert len(got.events) == min(i + 1, 4)


@EVERY_TOPOLOGY
async def test_event_documents_and_windows_of_other_sizes(make_service) -> None:
    """get_event_documents and reads of another window size answer as the script does."""
    quick, plain = await _pair(make_service)
    session = await quick.create_session(Key("app", "u", "docs"))
    for i in range(10):
        await quick.append_event(session, Event.message("user", f"m{i}"))
        for num in (3, 7):
            assert (await quick.get_event_documents(session.key, num_events=num)
                    == await plain.get_event_documents(session.key, num_events=num))
    missing = Key("app", "u", "absent")
    assert await quick.get_event_documents(missing, num_events=3) is None


@EVERY_TOPOLOGY
async def test_a_key_of_the_wrong_type_fails_as_with_the_script(make_service, redis_client) -> None:
    """A session key holding another Redis type makes the read fail as the script's does."""
    quick, plain = await _pair(make_service)
    session = await quick.create_session(Key("app", "u", "typed"))
    await quick.append_event(session, Event.message("user", "m"))
    await _both(quick, plain, session.key, 5)
    await redis_client.delete(quick.store.keys.user_state(session.key))
    await redis_client.lpush(quick.store.keys.user_state(session.key), b"x")
    errors = []
    for svc in (quick, plain):
        with pytest.raises((SessionStoreError, RedisError)) as caught:
            await svc.get_session(session.key, num_events=5)
        errors.append(type(caught.value))
    assert errors[0] is errors[1]


@pytest.mark.topologies("sentinel")
async def test_a_timed_out_transaction_leaves_no_reply_on_the_connection(
    make_service, redis_client
) -> None:
    """A transaction cut by the socket timeout closes its connection: once the server
    answers again, every read returns its own session (no reply of an earlier command)."""
    quick, plain = await _pair(make_service, socket_timeout_s=0.2)
    keys = [Key("app", "u", f"pause-{i}") for i in range(2)]
    for key in keys:
        session = await quick.create_session(key, state={"name": key.session_id.encode()})
        await quick.append_event(session, Event.message("user", key.session_id))
        await _both(quick, plain, key, 5)
    await redis_client.execute_command("CLIENT", "PAUSE", 700, "ALL")
    with contextlib.suppress(TimeoutError, SessionStoreError, RedisError):
        await quick.get_session(keys[0], num_events=5)  # timed out, or answered after it
    await redis_client.ping()  # answered once the pause ended
    hits = quick.store.hashidx.windows.hits
    for _ in range(3):
        for key in keys:
            got = await _both(quick, plain, key, 5)
            assert got is not None
            assert got.state["name"] == key.session_id.encode()
    assert quick.store.hashidx.windows.hits > hits


@pytest.mark.parametrize("seed", range(12))
@EVERY_TOPOLOGY
async def test_any_interleaving_reads_as_the_script(make_service, seed) -> None:
    """Appends by this service and another one, deletes and reads of any window size, in a
    random order (seeded): every read equals the script's read."""
    rng = random.Random(seed)
    quick, plain = await _pair(make_service)
    key = Key("app", "u", f"mixed-{seed}")
    mine = await quick.create_session(key)
    theirs = await plain.get_session(key)
    for i in range(40):
        op = rng.choices(["mine", "theirs", "read", "delete"], weights=[5, 2, 3, 1])[0]
        num, flag = rng.choice([1, 3, 5, 12]), rng.random() < 0.5
        if op == "delete":
            await plain.delete_session(key)
            mine = await quick.create_session(key)
            theirs = await plain.get_session(key)
        elif op in ("mine", "theirs"):
            svc, session = (quick, mine) if op == "mine" else (plain, theirs)
            await svc.append_event(session, Event.message("user" if flag else "assistant",
                                                          f"e{i}"))
        await _both(quick, plain, key, num, exact=flag)


@pytest.mark.parametrize("compat", [CompatMode.LEGACY, CompatMode.TRANSITION],
                         ids=lambda m: m.name)
async def test_legacy_user_state_is_merged_under_the_hashidx_one(
    make_service, redis_client, key_prefix, compat
) -> None:
    """With legacy data to consult, a transaction read merges the legacy user state under the
    HashIdx one, as the compat script does, and sees later changes to either."""
    go = GoLegacyWriter(redis_client, key_prefix)
    quick, plain = await _pair(make_service, compat)
    creator = await make_service(compat_mode=CompatMode.LEGACY)  # a HashIdx session
    session = await creator.create_session(Key("app", "u", "merged"))
    await go.user_state(session.key, {"old": b"1", "both": b"legacy"})
    await redis_client.hset(go.keys.user_state(session.key), "both", b"hashidx")
    await creator.append_event(session, Event.message("user", "hi"))
    await _both(quick, plain, session.key, 5)
    hits = quick.store.hashidx.windows.hits
    got = await _both(quick, plain, session.key, 5)
    assert got is not None
    assert (got.state["user:old"], got.state["user:both"]) == (b"1", b"hashidx")
    for value in (b"2", b"3"):
        await go.user_state(session.key, {"old": value})
        got = await _both(quick, plain, session.key, 5)
        assert got is not None
        assert got.state["user:old"] == value
    assert quick.store.hashidx.windows.hits == hits + 3


@pytest.mark.parametrize("compat", [CompatMode.LEGACY, CompatMode.TRANSITION],
                         ids=lambda m: m.name)
async def test_a_legacy_copy_of_a_remembered_session_wins(
    make_service, redis_client, key_prefix, compat
) -> None:
    """A legacy copy of a session whose HashIdx window is remembered (a Go node in a compat
    mode wrote it) is what the next read returns, as with the compat script; removing it
    brings the HashIdx session back."""
    go = GoLegacyWriter(redis_client, key_prefix)
    quick, plain = await _pair(make_service, compat)
    creator = await make_service(compat_mode=CompatMode.LEGACY)  # a HashIdx session
    session = await creator.create_session(Key("app", "u", "both"),
                                           state={"where": b"hashidx"})
    await creator.append_event(session, Event.message("user", "new layout"))
    await _both(quick, plain, session.key, 5)
    await _both(quick, plain, session.key, 5)
    windows = quick.store.hashidx.windows
    assert windows.hits >= 1
    await go.create(session.key, {"where": b"legacy"})
    await go.append(session.key, Event.message("user", "old layout"))
    got = await _both(quick, plain, session.key, 5)
    assert got is not None
    assert (got.service_meta["storage_type"], got.state["where"]) == ("zset", b"legacy")
    assert [e.response.choices[0].message.content for e in got.events] == ["old layout"]
    assert windows.misses == 1
    for _ in range(3):
        got = await _both(quick, plain, session.key, 5)
        assert got is not None
        assert got.service_meta["storage_type"] == "zset"
    await redis_client.hdel(go.keys.legacy_sessions(session.key), session.key.session_id)
    await redis_client.delete(go.keys.legacy_events(session.key))
    for _ in range(3):
        got = await _both(quick, plain, session.key, 5)
        assert got is not None
        assert got.state["where"] == b"hashidx"


@pytest.mark.parametrize("seed", range(6))
async def test_any_interleaving_with_legacy_copies_reads_as_the_script(
    make_service, redis_client, key_prefix, seed
) -> None:
    """LEGACY mode: appends by two services, legacy copies appearing and going, legacy user
    state written, deletes and reads in a random order (seeded): every read equals the
    compat script's read."""
    rng = random.Random(seed)
    go = GoLegacyWriter(redis_client, key_prefix)
    quick, plain = await _pair(make_service, CompatMode.LEGACY)
    key = Key("app", "u", f"legacy-mixed-{seed}")
    mine = await quick.create_session(key)
    theirs = await plain.get_session(key)
    for i in range(40):
        op = rng.choices(["mine", "theirs", "read", "delete", "legacy", "unlegacy", "user"],
                         weights=[5, 2, 3, 1, 1, 1, 1])[0]
        num, flag = rng.choice([1, 3, 5, 12]), rng.random() < 0.5
        if op == "delete":
            await plain.delete_session(key)
            await quick.create_session(key)
        elif op == "legacy":
            await go.create(key, {"n": str(i).encode()})
            await go.append(key, Event.message("user", f"legacy {i}"))
        elif op == "unlegacy":
            await redis_client.hdel(go.keys.legacy_sessions(key), key.session_id)
            await redis_client.delete(go.keys.legacy_events(key))
        elif op == "user":
            await go.user_state(key, {f"f{i % 3}": str(i).encode()})
        elif op in ("mine", "theirs"):
            svc, session = (quick, mine) if op == "mine" else (plain, theirs)
            await svc.append_event(session, Event.message("user" if flag else "assistant",
                                                          f"e{i}"))
        if op in ("delete", "legacy", "unlegacy"):
            mine, theirs = await quick.get_session(key), await plain.get_session(key)
        await _both(quick, plain, key, num, exact=flag)


async def test_a_refused_transaction_leaves_no_reply_on_the_connection(
    make_service, redis_client, redis_target
) -> None:
    """A user whose ACL refuses MULTI reads through the script: the refused transaction
    leaves no reply behind (each read returns its own session), and later reads back off
    instead of trying it every time."""
    if redis_target.kind != "standalone":
        pytest.skip("ACL users are set up on the standalone server")
    user = f"no-multi-{uuid.uuid4().hex[:6]}"
    await redis_client.execute_command("ACL", "SETUSER", user, "on", ">pw", "~*", "&*",
                                       "+@all", "-multi")
    try:
        url = redis_target.url.replace("redis://", f"redis://{user}:pw@", 1)
        quick, plain = await _pair(make_service, url=url)
        keys = [Key("app", "u", f"acl-{i}") for i in range(2)]
        for key in keys:
            session = await quick.create_session(key, state={"name": key.session_id.encode()})
            await quick.append_event(session, Event.message("user", key.session_id))
        for _ in range(40):
            for key in keys:
                got = await _both(quick, plain, key, 5)
                assert got is not None
                assert got.state["name"] == key.session_id.encode()
        windows = quick.store.hashidx.windows
        assert windows.hits == 0
        assert 2 <= windows.misses <= 16  # tried, then backed off (80 reads)
    finally:
        await redis_client.execute_command("ACL", "DELUSER", user)


async def test_streamed_appends_extend_the_window_the_next_read_checks(
    pipeline_settings, start_worker
) -> None:
    """In asynchronous mode the ids of streamed events extend the remembered window: the
    read after the workers applied them is a transaction, equal to the script's read."""
    start_worker()
    quick = SessionService(pipeline_settings(compat_mode=CompatMode.NONE))
    plain = SessionService(pipeline_settings(compat_mode=CompatMode.NONE))
    plain.store.hashidx.windows = WindowCache(capacity=0)
    try:
        session = await quick.create_session(Key("app", "u", "streamed"))
        for i in range(6):
            await quick.append_event(session, Event.message("user", f"m{i}"))
            got = await _both(quick, plain, session.key, 4)
            assert got is not None
            assert len(got.events) == min(i + 1, 4)
        assert quick.store.hashidx.windows.hits >= 4
        assert quick.store.hashidx.windows.misses == 0
    finally:
        await quick.close()
        await plain.close()


@EVERY_TOPOLOGY
async def test_reads_concurrent_with_appends_return_whole_windows(make_service) -> None:
    """Reads racing appends of one session (by another service, then by this one) each return
    a run of consecutive stored events, as many as the window holds: never a mix of two
    windows."""
    quick, plain = await _pair(make_service)
    session = await quick.create_session(Key("app", "u", "race"))
    theirs = await plain.get_session(session.key)
    reads: list[Session | None] = []

    appended = asyncio.Event()

    async def append() -> None:
        for svc, target in ((plain, theirs), (quick, session)):
            for i in range(25):
                await svc.append_event(target, Event.message("user", f"m{i}"))
        appended.set()

    async def read() -> None:
        while not appended.is_set():
            got = await quick.get_session(session.key, num_events=6, exact_window=True)
            reads.append(got)

    await asyncio.gather(append(), read(), read())
    windows = quick.store.hashidx.windows
    for _ in range(40):  # past any back-off left by the misses of the race
        reads.append(await quick.get_session(session.key, num_events=6, exact_window=True))
        if windows.hits:
            break
    final = await plain.get_session(session.key, num_events=0, exact_window=True)
    assert final is not None
    order = [e.id for e in final.events]
    assert len(order) == 50
    for got in reads:
        assert got is not None
        ids = [e.id for e in got.events]
        if not ids:
            continue
        start = order.index(ids[0])
        assert ids == order[start:start + len(ids)]
        assert len(ids) == min(6, start + len(ids))
    assert len(reads) > 20
    assert (windows.hits > 0) == _single_node(quick)


async def test_windows_above_the_largest_remembered_are_read_with_the_script(
    make_service,
) -> None:
    """A window of more than MAX_WINDOW_EVENTS events is not remembered (its ids would cost
    memory per session): it is read with the script, and equal to it."""
    quick, plain = await _pair(make_service)
    session = await quick.create_session(Key("app", "u", "wide"))
    events = [Event.message("user", f"m{i}") for i in range(MAX_WINDOW_EVENTS + 5)]
    await quick.append_events(session, events)
    for num in (MAX_WINDOW_EVENTS + 1, MAX_WINDOW_EVENTS):
        for _ in range(2):
            await _both(quick, plain, session.key, num)
    windows = quick.store.hashidx.windows
    assert len(windows) == 1
    assert windows.hits == 1
