"""The short read paths: stored events decoded as a list, create_session in one script that
reads the state scopes back, meta-only listings in one MGET per user."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import sessionstreams.common.hashidx as hashidx_module
from sessionstreams.common import _codec
from sessionstreams.common.errors import CorruptDataError, DecodeError
from sessionstreams.common.gotime import GoTime
from sessionstreams.common.models import Event, FunctionDef, Key, ToolCall, UserKey
from sessionstreams.common.settings import CompatMode

pytestmark = pytest.mark.topologies("cluster")

# JSON written by the Go service's encoder, kept in the repository (tests/golden).
GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
_CASES: list[dict[str, Any]] = json.loads((GOLDEN_DIR / "index.json").read_text())["cases"]
EVENT_CASES = [c for c in _CASES if c["kind"] == "event"]


def _golden(case: dict[str, Any]) -> bytes:
    return (GOLDEN_DIR / f"{case['name']}.json").read_bytes()


# -- decoding ---------------------------------------------------------------------------------
def test_event_list_decoding_equals_one_by_one_on_golden_events() -> None:
    """Every golden event decoded as one list equals Event.from_json of each; the ones Go
    refuses are reported in order and left out."""
    assert len(EVENT_CASES) > 20  # the fixtures are there
    raws = [_golden(c) for c in EVENT_CASES]
    expected: list[Event] = []
    refused: list[bytes] = []
    for raw in raws:
        try:
            expected.append(Event.from_json(raw))
        except DecodeError:
            refused.append(raw)
    reported: list[bytes] = []
    got = _codec.decode_events(raws, lambda raw, exc: reported.append(raw))
    assert got == expected
    assert [e.to_json() for e in got] == [e.to_json() for e in expected]
    assert reported == refused
    assert refused  # the fixtures include documents Go refuses


def test_event_list_decoding_skips_only_the_broken_event() -> None:
    """A corrupt document among good ones is reported; its neighbours still decode."""
    a = Event.message("user", "a")
    b = Event.message("assistant", "b")
    errors: list[DecodeError] = []
    got = _codec.decode_events([a.to_json(), b"{broken", b.to_json()],
                               lambda raw, exc: errors.append(exc))
    assert got == [a, b]
    assert len(errors) == 1


@pytest.mark.parametrize("key", [b"extra_fields", b"extra\\u005ffields"])
def test_extra_field_numbers_decode_as_floats_however_the_key_is_spelled(key: bytes) -> None:
    """A tool call's extra_fields numbers are float64 as in Go, with the key written plainly
    or with a JSON escape (the shortcut that skips documents without the key sees both)."""
    call = Event.message("assistant", "")
    assert call.response is not None
    call.response.choices[0].message.tool_calls = [ToolCall(
        type="function", id="c1", function=FunctionDef(name="f", arguments="{}"),
        extra_fields={"n": 1.0, "nested": {"m": [2.0]}})]
    raw = call.to_json().replace(b'"extra_fields"', b'"' + key + b'"')
    (got,) = _codec.decode_events([raw], lambda raw, exc: None)
    assert got.response is not None
    (decoded,) = got.response.choices[0].message.tool_calls or []
    assert decoded.extra_fields == {"n": 1.0, "nested": {"m": [2.0]}}
    assert type(decoded.extra_fields["n"]) is float
    assert type(decoded.extra_fields["nested"]["m"][0]) is float


def test_memoised_times_keep_each_texts_offset() -> None:
    """The same instant written with two offsets decodes to two times (the memo is keyed by
    the text), and a memoised time equals a fresh parse."""
    utc = Event.message("user", "x", timestamp=GoTime.parse("2025-01-02T03:04:05.123456789Z"))
    east = Event.message("user", "y",
                         timestamp=GoTime.parse("2025-01-02T11:04:05.123456789+08:00"))
    for _ in range(2):  # the second round is served from the memo
        got = _codec.decode_events([utc.to_json(), east.to_json()], lambda raw, exc: None)
        assert [e.timestamp.offset_s for e in got] == [0, 8 * 3600]
        assert got[0].timestamp == GoTime.parse("2025-01-02T03:04:05.123456789Z")
        assert got[0].timestamp.equal(got[1].timestamp)


def test_time_memo_stays_bounded() -> None:
    """Parsing more distinct times than the memo holds keeps it at its bound."""
    base = GoTime.parse("2025-01-02T03:04:05Z").unix_ns
    for i in range(_codec._TIMES_MAX + 10):
        _codec._time(GoTime(base + i).to_text())
    assert len(_codec._TIMES) <= _codec._TIMES_MAX


# -- create -----------------------------------------------------------------------------------
async def test_create_returns_the_scopes_and_refreshes_their_ttls(
    make_service, redis_client
) -> None:
    """An empty create returns the app and user state stored before it (the HashIdx user
    state winning over the legacy one) and refreshes both TTLs."""
    svc = await make_service(app_state_ttl=20, user_state_ttl=30)
    user = UserKey("app", "u")
    await svc.update_app_state("app", {"a": b"1"})
    await svc.update_user_state(user, {"k": b"new", "only": b"hashidx"})
    await redis_client.hset(svc.keys.legacy_user_state(user),
                            mapping={"k": b"old", "legacy": b"yes"})
    await redis_client.persist(svc.keys.app_state("app"))
    await redis_client.persist(svc.keys.user_state(user))
    s = await svc.create_session(Key("app", "u", ""), {"temp:t": b"x", "s": b"v"})
    assert s.state == {"s": b"v", "temp:t": b"x", "app:a": b"1", "user:k": b"new",
                       "user:only": b"hashidx", "user:legacy": b"yes"}
    assert 0 < await redis_client.ttl(svc.keys.app_state("app")) <= 20
    assert 20 < await redis_client.ttl(svc.keys.user_state(user)) <= 30
    got = await svc.get_session(s.key)
    assert got is not None
    assert {k: v for k, v in got.state.items() if not k.startswith("temp:")} == {
        k: v for k, v in s.state.items() if not k.startswith("temp:")}


async def test_create_of_an_existing_id_returns_the_stored_session(make_service) -> None:
    """A second create of one id returns the first session (no new meta, same incarnation)."""
    svc = await make_service(compat_mode=CompatMode.NONE)
    first = await svc.create_session(Key("app", "u", "s"), {"k": b"1"})
    again = await svc.create_session(Key("app", "u", "s"), {"k": b"2"})
    assert again.state["k"] == b"1"
    assert again.service_meta == first.service_meta


async def test_create_with_a_wrong_typed_user_state_writes_nothing(
    make_service, redis_client
) -> None:
    """A user-state key of the wrong Redis type fails the create before the meta is written."""
    svc = await make_service(compat_mode=CompatMode.NONE, enable_user_session_index=True)
    user = UserKey("app", "u")
    await redis_client.set(svc.keys.user_state(user), b"not a hash")
    with pytest.raises(CorruptDataError, match="wrong Redis type"):
        await svc.create_session(Key("app", "u", "s"))
    assert not await redis_client.exists(svc.keys.meta(Key("app", "u", "s")))
    assert not await redis_client.exists(svc.keys.session_index(user))


# -- meta-only listings -----------------------------------------------------------------------
async def test_meta_listing_prunes_stale_entries_and_skips_corrupt_metas(
    make_service, redis_client
) -> None:
    """only_meta with the index: an entry without meta is removed, a corrupt meta hidden."""
    svc = await make_service(enable_user_session_index=True)
    await svc.update_user_state(UserKey("app", "u"), {"lang": b"fr"})
    await svc.create_session(Key("app", "u", "good"), {"k": b"v"})
    bad = await svc.create_session(Key("app", "u", "bad"))
    gone = await svc.create_session(Key("app", "u", "gone"))
    await redis_client.delete(svc.keys.meta(gone.key))
    await redis_client.set(svc.keys.meta(bad.key), b"{broken")
    (got,) = await svc.list_sessions(UserKey("app", "u"), only_meta=True)
    assert got.id == "good"
    assert got.state == {"k": b"v", "user:lang": b"fr"}
    assert got.events == []
    fields = await redis_client.hkeys(svc.keys.session_index(UserKey("app", "u")))
    assert sorted(fields) == [b"bad", b"good"]


async def test_meta_listing_of_an_indexed_user_reads_ids_and_metas_in_one_script(
    make_service, redis_target
) -> None:
    """With the index, a user's sessions (up to a page) and their metas come from one script
    call sent beside the scope reads: no HSCAN page, no separate MGET."""
    svc = await make_service(enable_user_session_index=True)
    for i in range(10):
        await svc.create_session(Key("app", "u", f"s{i}"), {"n": str(i).encode()})
    await svc.create_session(Key("app", "other", "x"))
    await redis_target.reset_stats()
    listed = await svc.list_sessions(UserKey("app", "u"), only_meta=True)
    assert sorted((s.id, s.state["n"]) for s in listed) == [
        (f"s{i}", str(i).encode()) for i in range(10)]
    stats = await redis_target.command_stats()
    assert "hscan" not in stats
    assert stats.get("evalsha", 0) + stats.get("eval", 0) == 1
    assert stats["mget"] == 1  # inside the script


@pytest.mark.parametrize("indexed", [True, False])
async def test_meta_listing_spans_several_index_pages(
    make_service, monkeypatch: pytest.MonkeyPatch, indexed: bool
) -> None:
    """A user whose index takes several HSCAN pages (or a SCAN) has each session listed once,
    newest update first, and no other user's."""
    monkeypatch.setattr(hashidx_module, "INDEX_PAGE", 16)
    svc = await make_service(enable_user_session_index=indexed)
    made = [await svc.create_session(Key("app", "u", f"s{i:03d}")) for i in range(150)]
    await svc.create_session(Key("app", "other", "x"))
    listed = await svc.list_sessions(UserKey("app", "u"), only_meta=True)
    assert [s.id for s in listed] == [s.id for s in sorted(
        made, key=lambda s: (s.updated_at, s.id), reverse=True)]


async def test_meta_listing_of_legacy_sessions_uses_their_documents(
    make_service
) -> None:
    """only_meta in LEGACY mode lists the legacy sessions beside the HashIdx ones."""
    legacy = await make_service(compat_mode=CompatMode.TRANSITION)
    await legacy.create_session(Key("app", "u", "old"), {"k": b"legacy"})
    svc = await make_service(compat_mode=CompatMode.LEGACY)
    await svc.create_session(Key("app", "u", "new"), {"k": b"hashidx"})
    listed = {s.id: s for s in await svc.list_sessions(UserKey("app", "u"), only_meta=True)}
    assert {k: (s.state["k"], s.service_meta["storage_type"]) for k, s in listed.items()} == {
        "old": (b"legacy", "zset"), "new": (b"hashidx", "hashidx")}


# -- one-call pipelines -----------------------------------------------------------------------
async def test_a_one_call_pipeline_answers_like_a_longer_one(make_service, redis_client) -> None:
    """A pipeline of one call (sent without a pipeline) gives the reply the same call gets in
    a longer pipeline, reloads a script the server lost, and with raise_errors=False leaves
    a command error in place."""
    svc = await make_service()
    scripts = svc.store.scripts
    await svc.create_session(Key("app", "u", "s"), {"k": b"v"})
    call = svc.store.hashidx.load_call(Key("app", "u", "s"), 5, None, "estu")
    hash_call = ("cmd", "HGETALL", svc.keys.user_state(UserKey("app", "u")))
    (alone,) = await scripts.run_pipeline(svc.client, [call])
    together, _ = await scripts.run_pipeline(svc.client, [call, hash_call])
    assert alone == together
    assert await scripts.run_pipeline(svc.client, [hash_call]) == [{}]
    await redis_client.script_flush()
    assert await scripts.run_pipeline(svc.client, [call]) == [together]
    await redis_client.set(svc.keys.user_state(UserKey("app", "u")), b"not a hash")
    (error,) = await scripts.run_pipeline(svc.client, [hash_call], raise_errors=False)
    assert isinstance(error, Exception)
    assert "WRONGTYPE" in str(error)


# -- event windows ----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", [CompatMode.NONE, CompatMode.TRANSITION])
async def test_event_window_equals_get_sessions_exact_window(make_service, mode) -> None:
    """get_events and get_event_documents give the events of
    get_session(exact_window=True), with or without ``after``; None for a missing session."""
    svc = await make_service(compat_mode=mode, session_event_storage_limit=0)
    session = await svc.create_session(Key("app", "u", "window"))
    base = GoTime.parse("2026-01-02T03:04:05Z").unix_ns
    for i in range(30):
        event = Event.message("user" if i % 3 == 0 else "assistant", f"m{i}",
                              timestamp=GoTime.from_unix_ns(base + i * 1_000_000_000))
        await svc.append_event(session, event)
    for num, after in ((10, None), (0, None), (50, GoTime.from_unix_ns(base + 25 * 1_000_000_000))):
        whole = await svc.get_session(session.key, num_events=num, after=after,
                                      exact_window=True)
        events = await svc.get_events(session.key, num_events=num, after=after)
        assert events == whole.events
        assert events  # a window to compare
        documents = await svc.get_event_documents(session.key, num_events=num, after=after)
        assert [Event.from_json(d) for d in documents] == whole.events
    assert len(await svc.get_events(session.key, num_events=10)) == 10
    missing = Key("app", "u", "nothing-here")
    assert await svc.get_events(missing) is None
    assert await svc.get_event_documents(missing) is None


async def test_event_window_goes_through_get_session_hooks(make_service) -> None:
    """With get-session hooks set, the event window is what the hooks return."""

    async def hook(ctx, nxt):
        session = await nxt()
        if session is not None:
            session.events = [e for e in session.events if e.author != "hidden"]
        return session

    svc = await make_service(get_session_hooks=(hook,))
    session = await svc.create_session(Key("app", "u", "hooked"))
    await svc.append_event(session, Event.message("user", "seen", author="user"))
    await svc.append_event(session, Event.message("assistant", "not", author="hidden"))
    events = await svc.get_events(session.key, num_events=5)
    assert [e.author for e in events] == ["user"]
    documents = await svc.get_event_documents(session.key, num_events=5)
    assert [Event.from_json(d).author for d in documents] == ["user"]


async def test_event_documents_return_an_undecodable_document_as_stored(
    make_service, redis_client
) -> None:
    """get_events skips a stored event Go refuses; get_event_documents returns it as stored."""
    svc = await make_service(compat_mode=CompatMode.NONE)
    session = await svc.create_session(Key("app", "u", "broken"))
    good = Event.message("user", "fine")
    await svc.append_event(session, good)
    await redis_client.hset(svc.keys.event_data(session.key), good.id, b"{broken")
    assert await svc.get_events(session.key) == []
    assert await svc.get_event_documents(session.key) == [b"{broken"]
