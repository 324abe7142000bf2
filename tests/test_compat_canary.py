"""Canary: a TRANSITION service and a LEGACY service on one Redis, both writing, none lost.

This is the rolling-migration situation of reference §5: TRANSITION nodes create sessions in
the legacy layout, LEGACY nodes in HashIdx, and each reads and writes the other's sessions
where they live. Every write of both services must be visible to both, in order.
"""

from __future__ import annotations

import asyncio

import pytest
from legacy_layout import GoLegacyWriter

from sessionstreams.common.gotime import GoTime
from sessionstreams.common.keys import KeySpace
from sessionstreams.common.models import Event, Key, TrackEvent, UserKey
from sessionstreams.common.settings import CompatMode

# Also on Cluster in every run: the legacy layout puts a whole app in one slot.
pytestmark = pytest.mark.topologies("cluster")

USER = UserKey("app", "u")
APPENDS = 15
TRACKS = 3


async def _write(svc, name: str, key: Key) -> None:
    """One writer's work on one session: appends with a seq, track events, a state update."""
    s = await svc.get_session(key)
    assert s is not None
    for i in range(APPENDS):
        role = "user" if i % 3 == 0 else "assistant"
        e = Event.message(role, f"{name} {i}", id=f"{name}-{key.session_id}-{i:02d}",
                          state_delta={f"{name}_seq": str(i).encode()})
        await svc.append_event(s, e)
        if i % 5 == 0:
            await svc.append_track_event(
                s, TrackEvent(track=name, payload=str(i).encode(), timestamp=GoTime.now())
            )
    await svc.update_session_state(key, {f"{name}_done": b"1"})
    await svc.update_user_state(USER, {name: b"1"})


async def test_transition_and_legacy_services_lose_nothing(make_service, redis_client,
                                                           key_prefix) -> None:
    """Both services write every session of both layouts concurrently; both then read all
    writes of both, in order, and each session still lives in exactly one layout."""
    transition = await make_service(compat_mode=CompatMode.TRANSITION)
    legacy_mode = await make_service(compat_mode=CompatMode.LEGACY)
    t_keys = [Key("app", "u", f"t{i}") for i in range(4)]
    l_keys = [Key("app", "u", f"l{i}") for i in range(4)]
    shared = Key("app", "u", "shared")
    for k in t_keys:
        assert (await transition.create_session(k)).service_meta["storage_type"] == "zset"
    for k in l_keys:
        assert (await legacy_mode.create_session(k)).service_meta["storage_type"] == "hashidx"
    await transition.create_session(shared)
    assert (await legacy_mode.create_session(shared)).service_meta["storage_type"] == "zset"
    every = [*t_keys, *l_keys, shared]

    await asyncio.gather(*(
        _write(svc, name, k)
        for svc, name in ((transition, "T"), (legacy_mode, "L")) for k in every
    ))

    for reader in (transition, legacy_mode):
        assert sorted(s.id for s in await reader.list_sessions(USER)) == sorted(
            k.session_id for k in every)
        assert await reader.list_user_states(USER) == {"T": b"1", "L": b"1"}
        for k in every:
            s = await reader.get_session(k)
            for name in ("T", "L"):
                mine = [e.id for e in s.events if e.id.startswith(f"{name}-")]
                assert mine == [f"{name}-{k.session_id}-{i:02d}" for i in range(APPENDS)]
                assert s.state[f"{name}_seq"] == str(APPENDS - 1).encode()
                assert s.state[f"{name}_done"] == b"1"
                payloads = [t.payload for t in s.tracks[name].events]
                assert payloads == [str(i).encode() for i in range(0, APPENDS, 5)]

    keys = KeySpace(key_prefix)
    go = GoLegacyWriter(redis_client, key_prefix)
    for k in every:
        in_legacy = await redis_client.hexists(keys.legacy_sessions(k), k.session_id)
        in_hashidx = await redis_client.exists(keys.meta(k))
        assert bool(in_legacy) != bool(in_hashidx), k
        if in_legacy:  # a Go reader decodes every event we wrote
            assert len(await go.events(k)) == 2 * APPENDS


async def test_racing_creates_across_modes_converge(make_service) -> None:
    """The same ids created at once by a TRANSITION and a LEGACY service end as one session
    per id: appends through either returned object are seen by both services."""
    transition = await make_service(compat_mode=CompatMode.TRANSITION)
    legacy_mode = await make_service(compat_mode=CompatMode.LEGACY)
    keys = [Key("app", "u", f"race{i}") for i in range(20)]
    pairs = await asyncio.gather(*(
        asyncio.gather(transition.create_session(k), legacy_mode.create_session(k))
        for k in keys
    ))
    for k, (from_t, from_l) in zip(keys, pairs, strict=True):
        await transition.append_event(from_t, Event.message("user", "t", id="t"))
        await legacy_mode.append_event(from_l, Event.message("user", "l", id="l"))
        for reader in (transition, legacy_mode):
            got = await reader.get_session(k)
            assert sorted(e.id for e in got.events) == ["l", "t"], k
