"""The write-load generator used by the failover and resharding tests checks what it claims:
a clean run verifies, and a lost or duplicated write is reported."""

from __future__ import annotations

import time

from loadgen import WriteLoad


async def test_clean_load_verifies(make_service) -> None:
    """Writers append concurrently; every acknowledged write is found, in order, once."""
    svc = await make_service(session_event_storage_limit=0)
    async with WriteLoad(svc, users=["a", "b", "c"], sessions_per_user=2, readers=1) as load:
        await load.wait_for_acks(120)
    report = await load.verify()
    report.assert_ok()
    assert report.acked == report.checked >= 120
    assert load.reads > 0
    assert {w.key for w in load.acks} == set(load.keys)


async def test_lost_write_is_reported(make_service, redis_client) -> None:
    """An acknowledged event deleted behind the load's back is reported missing, or as
    lost before ``since`` when it was acknowledged earlier."""
    svc = await make_service(session_event_storage_limit=0)
    async with WriteLoad(svc, users=["a"]) as load:
        await load.wait_for_acks(20)
    victim = load.acks[5]
    await redis_client.hdel(svc.keys.event_data(victim.key), victim.event_id)
    await redis_client.zrem(svc.keys.event_index(victim.key), victim.event_id)
    report = await load.verify()
    assert not report.ok
    assert [w.event_id for w in report.missing] == [victim.event_id]
    later = await load.verify(since=load.acks[6].acked)
    assert later.ok
    assert [w.event_id for w in later.lost_before] == [victim.event_id]


async def test_wait_for_acks_counts_writes_started_after(make_service) -> None:
    """wait_for_acks(started_after=t) only counts writes sent after t."""
    svc = await make_service(session_event_storage_limit=0)
    async with WriteLoad(svc, users=["a", "b"]) as load:
        await load.wait_for_acks(10)
        moment = time.monotonic()
        await load.wait_for_acks(10, started_after=moment)
        first = load.first_ack_started_after(moment)
    assert first is not None
    assert first > moment
