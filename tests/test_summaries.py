"""Session summaries in the caller (synchronous mode), on a real redis-server.

Reference §11 cases 67-79 (case 72, the overflow to the caller, and 76, the job timeout, also
run with real workers in test_summary_workers.py), §7.3-7.5 (delta, boundary, cascade,
allowlist) and §2.5 (the stored JSON). Deliberate differences (DESIGN §4, difference 4): the
summary TTL follows the session's (appends refresh it), and "set if newer" compares parsed
times.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from summary_fixtures import FailingSummarizer, RecordingSummarizer, items_of, read_calls

from sessionstreams.common.errors import (
    ConfigError,
    InvalidArgumentError,
    InvalidKeyError,
    SummarizeError,
    SummaryTimeoutError,
)
from sessionstreams.common.gotime import GoTime
from sessionstreams.common.models import (
    Event,
    Key,
    Session,
    Summary,
    SummaryBoundary,
    decode_summary_map,
)
from sessionstreams.common.summaries import (
    LAST_INCLUDED_EVENT_ID,
    LAST_INCLUDED_TS,
    load_summarizer,
)
from sessionstreams.common.summarizers import ExtractiveSummarizer

pytestmark = pytest.mark.topologies("cluster", "sentinel")

T0 = 1_735_787_045_000_000_000  # 2025-01-02T03:04:05Z in ns
HOUR_NS = 3_600 * 10**9


def msg(role: str, text: str, i: int, **kw) -> Event:
    """A message with a fixed, increasing timestamp (after T0, so after any createdAt)."""
    return Event.message(role, text, id=f"e{i:03d}", timestamp=GoTime.now(), **kw)


async def stored_map(redis_client, svc, key: Key) -> dict[str, Summary]:
    raw = await redis_client.get(svc.keys.summary(key))
    return {k: v for k, v in (decode_summary_map(raw) or {}).items() if v is not None} if raw \
        else {}


async def conversation(svc, sid: str = "s", n: int = 3, **kw) -> Session:
    """A session with ``n`` alternating user/assistant messages m0..m(n-1)."""
    s = await svc.create_session(Key("app", "u", sid))
    for i in range(n):
        await svc.append_event(s, msg("user" if i % 2 == 0 else "assistant", f"m{i}", i, **kw))
    return s


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "calls.jsonl"


async def test_create_summary_stores_go_json_and_boundary(make_service, redis_client, log):
    """The summary map is stored as Go writes it; updated_at is the last included event's
    time (UTC) and the boundary names that event; get_session attaches it."""
    svc = await make_service(summarizer=RecordingSummarizer(log))
    s = await conversation(svc)
    await svc.create_session_summary(s)
    stored = await stored_map(redis_client, svc, s.key)
    last = s.events[-1]
    assert set(stored) == {""}
    assert items_of(stored[""].summary) == ["m0", "m1", "m2"]
    assert stored[""].updated_at == last.timestamp.to_utc()
    assert stored[""].boundary == SummaryBoundary(version=1, cutoff_at=last.timestamp.to_utc(),
                                                  last_event_id=last.id)
    raw = await redis_client.get(svc.keys.summary(s.key))
    assert raw == stored[""].to_json().join([b'{"":', b"}"])
    assert s.summaries[""] == stored[""]  # the caller's session sees it at once
    got = await svc.get_session(s.key)
    assert got is not None
    assert got.summaries == stored


async def test_second_summary_gets_previous_summary_and_delta_only(make_service, log):
    """Only events after the boundary are new; the previous summary comes as a system event."""
    svc = await make_service(summarizer=RecordingSummarizer(log))
    s = await conversation(svc)
    await svc.create_session_summary(s)
    await svc.append_event(s, msg("user", "m3", 3))
    await svc.create_session_summary(s)
    calls = read_calls(log)
    assert [c["new"] for c in calls] == [["m0", "m1", "m2"], ["m3"]]
    assert calls[1]["items"] == ["m0", "m1", "m2", "m3"]
    assert calls[1]["session"] == f"{s.id}:"
    await svc.create_session_summary(s)  # nothing new, not forced: the summarizer is not called
    assert len(read_calls(log)) == 2
    await svc.create_session_summary(s, force=True)
    assert read_calls(log)[-1]["new"] == []


async def test_no_summarizer_nil_session_and_bad_key(make_service, redis_client):
    """Case 70/71: no summarizer -> nothing; a nil session and an invalid key are errors."""
    svc = await make_service()
    s = await conversation(svc)
    await svc.create_session_summary(s)
    assert await redis_client.exists(svc.keys.summary(s.key)) == 0
    with_summarizer = await make_service(summarizer=ExtractiveSummarizer())
    for call in (with_summarizer.create_session_summary, with_summarizer.enqueue_summary_job):
        with pytest.raises(InvalidArgumentError, match="session is nil"):
            await call(None)  # type: ignore[arg-type]
        with pytest.raises(InvalidKeyError, match="check session key failed"):
            await call(Session(id="", app_name="app", user_id="u"))
    with pytest.raises(InvalidKeyError, match="check session key failed"):
        await svc.enqueue_summary_job(Session(id="", app_name="app", user_id="u"))


async def test_summary_text_prefers_memory(make_settings):
    """Case 67: in-memory summaries "" and "b1" -> ""'s text; Redis is not read (it is down)."""
    from sessionstreams.producer import SessionService

    down = SessionService(make_settings(url="redis://127.0.0.1:1/0", socket_timeout_s=0.2,
                                        socket_connect_timeout_s=0.2))
    s = Session(id="s", app_name="app", user_id="u", created_at=GoTime(T0))
    s.summaries = {"": Summary(summary="full", updated_at=GoTime(T0 + 1)),
                   "b1": Summary(summary="branch", updated_at=GoTime(T0 + 1))}
    try:
        assert await down.get_session_summary_text(s) == "full"
        assert await down.get_session_summary_text(s, "b1") == "branch"
        assert await down.get_session_summary_text(s, "b2") == "full"
        s.summaries = {}
        assert await down.get_session_summary_text(s) is None  # case 79: Redis down
        assert await down.get_session_summary_text(None) is None  # type: ignore[arg-type]
    finally:
        await down.close()


async def test_summary_text_from_redis_falls_back_to_full(make_service, redis_client):
    """Case 68: without in-memory summaries the stored map is read; a branch falls back to "";
    a summary whose cutoff precedes the session's createdAt is not picked (ref. §7.4)."""
    svc = await make_service()
    s = await conversation(svc)
    later = GoTime(s.created_at.unix_ns + 10**9)
    await redis_client.set(svc.keys.summary(s.key), _map({"": Summary(summary="all",
                                                                        updated_at=later)}))
    s.summaries = {}
    assert await svc.get_session_summary_text(s) == "all"
    assert await svc.get_session_summary_text(s, "b1") == "all"
    old = GoTime(s.created_at.unix_ns - 10**9)
    await redis_client.set(svc.keys.summary(s.key), _map({"": Summary(summary="old",
                                                                        updated_at=old)}))
    assert await svc.get_session_summary_text(s) is None
    assert await svc.get_session_summary_text(Session(id="", app_name="a", user_id="u")) is None


def _map(m: dict[str, Summary]) -> bytes:
    from sessionstreams.common.models import encode_summary_map

    return encode_summary_map(dict(m))


async def test_future_summary_is_not_overwritten(make_service, redis_client, log):
    """Case 69: a stored summary one hour in the future wins over a new one."""
    svc = await make_service(summarizer=RecordingSummarizer(log))
    s = await conversation(svc)
    future = Summary(summary="future", updated_at=GoTime(GoTime.now().unix_ns + HOUR_NS))
    await redis_client.set(svc.keys.summary(s.key), _map({"": future}))
    await svc.create_session_summary(s)
    assert (await stored_map(redis_client, svc, s.key))[""].summary == "future"


async def test_newer_compares_parsed_times_not_strings(make_service, redis_client, log):
    """Difference 4: "...:00Z" vs "...:00.5+01:00" compare as instants (Go compares strings)."""
    svc = await make_service(summarizer=RecordingSummarizer(log))
    s = await conversation(svc)
    newest = max(e.timestamp for e in s.events)
    # Stored an hour "later" by string order but earlier as an instant (+01:00 offset).
    earlier = GoTime(newest.unix_ns - 10**9, 3600)
    await redis_client.set(svc.keys.summary(s.key), _map({"": Summary(summary="x",
                                                                        updated_at=earlier)}))
    await svc.create_session_summary(s)
    assert items_of((await stored_map(redis_client, svc, s.key))[""].summary) == ["m0", "m1", "m2"]


async def test_all_events_share_filter_key_both_stored(make_service, redis_client, log):
    """Case 73: every event has filterKey tool-usage -> tool-usage and "" are both stored,
    from one summarizer call ("" is a copy)."""
    svc = await make_service(summarizer=RecordingSummarizer(log))
    s = await conversation(svc, filter_key="tool-usage")
    await svc.enqueue_summary_job(s, "tool-usage")  # synchronous mode: runs here
    stored = await stored_map(redis_client, svc, s.key)
    assert set(stored) == {"tool-usage", ""}
    assert stored[""].summary == stored["tool-usage"].summary
    assert stored["tool-usage"].boundary.filter_key == "tool-usage"
    assert stored[""].boundary.filter_key == ""
    assert len(read_calls(log)) == 1


async def test_mixed_events_summarize_key_and_full_session(make_service, redis_client, log):
    """§7.5: with events of other keys, the key's summary covers its events (hierarchically)
    and the full-session summary covers all of them."""
    svc = await make_service(summarizer=RecordingSummarizer(log))
    s = await svc.create_session(Key("app", "u", "s"))
    for i, key in enumerate(["a", "b", "a/x", ""]):
        await svc.append_event(s, msg("user", f"m{i}", i, filter_key=key))
    await svc.enqueue_summary_job(s, "a")
    stored = await stored_map(redis_client, svc, s.key)
    assert items_of(stored["a"].summary) == ["m0", "m2", "m3"]
    assert items_of(stored[""].summary) == ["m0", "m1", "m2", "m3"]


async def test_cascade_disabled_stores_only_the_key(make_service, redis_client, log):
    """Case 74: cascade off -> only the branch key is stored."""
    svc = await make_service(summarizer=RecordingSummarizer(log),
                             cascade_full_session_summary=False)
    s = await conversation(svc, filter_key="b1")
    await svc.enqueue_summary_job(s, "b1")
    assert set(await stored_map(redis_client, svc, s.key)) == {"b1"}


async def test_allowlist(make_service, redis_client, log):
    """Case 75: allowlist "allowed", key "blocked" (forced) -> nothing written, neither by
    create nor by a job without cascade; "allowed/sub" matches hierarchically."""
    svc = await make_service(summarizer=RecordingSummarizer(log),
                             summary_filter_allowlist=("allowed",),
                             cascade_full_session_summary=False)
    s = await conversation(svc)
    await svc.create_session_summary(s, "blocked", force=True)
    await svc.enqueue_summary_job(s, "blocked", force=True)
    assert await redis_client.exists(svc.keys.summary(s.key)) == 0
    await svc.create_session_summary(s, "allowed/sub")
    assert set(await stored_map(redis_client, svc, s.key)) == {"allowed/sub"}


async def test_job_timeout_in_caller_writes_nothing(make_service, redis_client, log):
    """Case 76 (run in the caller): a summarizer that blocks past the job timeout -> error,
    no summary key."""
    svc = await make_service(summarizer=RecordingSummarizer(log, block=True),
                             summary_job_timeout=0.05)
    s = await conversation(svc)
    with pytest.raises(SummaryTimeoutError):
        await svc.enqueue_summary_job(s)
    assert await redis_client.exists(svc.keys.summary(s.key)) == 0


async def test_sync_mode_enqueue_runs_in_caller(make_service, redis_client):
    """Case 77: without workers (synchronous mode) a job runs in the caller and is stored."""
    svc = await make_service(summarizer=ExtractiveSummarizer())
    s = await conversation(svc)
    assert await svc.enqueue_summary_job(s) is None
    text = await svc.get_session_summary_text(s)
    assert text == "User: m0 | m2\nAssistant: m1"


async def test_key_prefix(make_service, redis_client, key_prefix):
    """Case 78: the summary key carries the prefix; no unprefixed key is written."""
    svc = await make_service(summarizer=ExtractiveSummarizer())
    s = await conversation(svc)
    await svc.create_session_summary(s)
    found = [k.decode() async for k in redis_client.scan_iter(match="*hashidx:sesssum:*")]
    assert f"{key_prefix}:hashidx:sesssum:app:{{u}}:s" in found
    assert "hashidx:sesssum:app:{u}:s" not in found


async def test_empty_or_failed_summary_keeps_the_good_one(make_service, redis_client, log):
    """An empty answer stores nothing; a failing summarizer raises and stores nothing."""
    svc = await make_service(summarizer=RecordingSummarizer(log))
    s = await conversation(svc)
    await svc.create_session_summary(s)
    good = await redis_client.get(svc.keys.summary(s.key))
    await svc.append_event(s, msg("user", "m3", 3))
    empty = await make_service(summarizer=RecordingSummarizer(log, text="  "))
    await empty.create_session_summary(s)
    failing = await make_service(summarizer=FailingSummarizer())
    with pytest.raises(SummarizeError, match=f"summarize session {s.id} failed"):
        await failing.create_session_summary(s)
    assert await redis_client.get(svc.keys.summary(s.key)) == good


async def test_summarizer_recorded_boundary(make_service, redis_client):
    """A summarizer that records summary:last_included_* sets the boundary (ref. §7.3)."""
    first = msg("user", "m0", 0)

    class Partial:
        async def should_summarize(self, session):
            return True

        async def summarize(self, session):
            session.state[LAST_INCLUDED_TS] = first.timestamp.to_text().encode()
            session.state[LAST_INCLUDED_EVENT_ID] = first.id.encode()
            return "only the first"

    svc = await make_service(summarizer=Partial())
    s = await svc.create_session(Key("app", "u", "s"))
    await svc.append_events(s, [first, msg("assistant", "m1", 1)])
    await svc.create_session_summary(s)
    stored = (await stored_map(redis_client, svc, s.key))[""]
    assert stored.boundary.last_event_id == first.id
    assert stored.updated_at == first.timestamp.to_utc()


async def test_ttl_follows_the_session(make_service, redis_client, log):
    """Case 45 and difference 4: the summary key has the session's remaining TTL, appends and
    state updates refresh it with the session; without a session TTL it has none."""
    svc = await make_service(summarizer=RecordingSummarizer(log), session_ttl=30)
    s = await conversation(svc)
    await redis_client.pexpire(svc.keys.meta(s.key), 10_000)
    await svc.create_session_summary(s)
    sum_key = svc.keys.summary(s.key)
    assert 0 < await redis_client.pttl(sum_key) <= 10_000
    await svc.append_event(s, msg("user", "m3", 3))
    assert 10_000 < await redis_client.pttl(sum_key) <= 30_000
    await redis_client.pexpire(sum_key, 5_000)
    await svc.update_session_state(s.key, {"k": b"v"})
    assert 10_000 < await redis_client.pttl(sum_key) <= 30_000
    plain = await make_service(summarizer=RecordingSummarizer(log))
    t = await conversation(plain, sid="t")
    await plain.create_session_summary(t)
    assert await redis_client.pttl(plain.keys.summary(t.key)) == -1


async def test_legacy_layout_summary(make_service, redis_client, log):
    """A session living in the legacy layout gets its summary in the per-user sesssum HASH,
    with the session's TTL; the text is read back from there."""
    svc = await make_service(summarizer=RecordingSummarizer(log), compat_mode="transition",
                             session_ttl=30)
    s = await conversation(svc)
    assert s.service_meta["storage_type"] == "zset"
    await svc.create_session_summary(s)
    raw = await redis_client.hget(svc.keys.legacy_summaries(s.key), s.id)
    assert items_of(decode_summary_map(raw)[""].summary) == ["m0", "m1", "m2"]
    assert await redis_client.exists(svc.keys.summary(s.key)) == 0
    assert 0 < await redis_client.pttl(svc.keys.legacy_summaries(s.key)) <= 30_000
    s.summaries = {}
    assert items_of(await svc.get_session_summary_text(s)) == ["m0", "m1", "m2"]


async def test_delete_session_removes_summary_keys(make_service, redis_client, log):
    """delete_session removes the summary map and our summary-run record."""
    svc = await make_service(summarizer=RecordingSummarizer(log))
    s = await conversation(svc)
    await svc.create_session_summary(s)
    await redis_client.hset(svc.keys.summary_runs(s.key), "c:", "1-0")
    await svc.delete_session(s.key)
    assert await redis_client.exists(svc.keys.summary(s.key), svc.keys.summary_runs(s.key)) == 0


def test_load_summarizer() -> None:
    """--summarizer takes module:factory; classes and functions are called, errors are
    ConfigError."""
    made = load_summarizer("sessionstreams.common.summarizers:ExtractiveSummarizer")
    assert isinstance(made, ExtractiveSummarizer)
    for bad in ("sessionstreams.common.summarizers", "no.such.module:x",
                "sessionstreams.common.summarizers:nothing",
                "sessionstreams.common.gotime:GoTime"):
        with pytest.raises(ConfigError):
            load_summarizer(bad)


async def test_extractive_summarizer_is_deterministic() -> None:
    """First sentence of each user turn, the last answer, the previous summary kept."""
    summarizer = ExtractiveSummarizer(max_chars=60)
    s = Session(id="s:", app_name="a", user_id="u", events=[
        Event.message("system", "Earlier.", author="system"),
        Event.message("user", "Book a table for two. At eight."),
        Event.message("assistant", "Done. Anything else?"),
    ])
    text = await summarizer.summarize(s)
    assert text == "Earlier.\nUser: Book a table for two.\nAssistant: Done."
    assert text == await summarizer.summarize(s)
    s.events.append(Event.message("user", "x" * 200))
    assert len(await summarizer.summarize(s)) == 60


async def test_summary_spans_and_go_counters(make_service, span_exporter, metric_reader, log):
    """Ref. §9: spans create_session_summary and get_session_summary_text; the Go counters
    count summary writes and Redis reads of the text (not in-memory hits)."""
    from otel_harness import total

    from sessionstreams.common.tracing import GO_COUNTER_PREFIX

    svc = await make_service(summarizer=RecordingSummarizer(log), enable_tracing=True)
    s = await conversation(svc)
    await svc.create_session_summary(s)
    assert await svc.get_session_summary_text(s)  # in memory
    s.summaries = {}
    assert await svc.get_session_summary_text(s)  # from Redis
    names = [sp.name for sp in span_exporter.get_finished_spans() if sp.parent is None]
    assert names[-3:] == ["create_session_summary", "get_session_summary_text",
                          "get_session_summary_text"]

    def go(name: str) -> float:
        return total(metric_reader, f"{GO_COUNTER_PREFIX}{name}_count", storage="hashidx")

    assert go("create_session_summary") == 1
    assert go("get_session_summary_text") == 1
