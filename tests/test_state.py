"""App, user and session state operations (reference §11 cases 55-62) on a real redis-server.

Deliberate difference: a leading ``app:`` / ``user:`` in update_app_state / update_user_state
is stripped (Go stores ``app:x`` verbatim and reads it back as ``app:app:x``).
"""

from __future__ import annotations

import pytest

from sessionstreams.common.errors import CorruptDataError, InvalidKeyError, SessionNotFoundError
from sessionstreams.common.models import Key, UserKey


async def test_app_state_update_list_delete(make_service) -> None:
    """update/list/delete of app state, with a prefixed key stripped."""
    svc = await make_service()
    assert await svc.list_app_states("app") == {}
    await svc.update_app_state("app", {"a": b"1", "app:b": "two"})
    assert await svc.list_app_states("app") == {"a": b"1", "b": b"two"}
    await svc.delete_app_state("app", "app:a")
    await svc.delete_app_state("app", "missing")
    assert await svc.list_app_states("app") == {"b": b"two"}


async def test_user_state_update_list_delete(make_service) -> None:
    """update/list/delete of user state; a nil value is stored as empty bytes."""
    svc = await make_service()
    user = UserKey("app", "u")
    assert await svc.list_user_states(user) == {}
    await svc.update_user_state(user, {"a": b"1", "user:n": None})
    assert await svc.list_user_states(user) == {"a": b"1", "n": b""}
    await svc.delete_user_state(user, "a")
    assert await svc.list_user_states(user) == {"n": b""}


async def test_state_argument_errors(make_service) -> None:
    """Empty state keys and empty app/user ids raise InvalidKeyError."""
    svc = await make_service()
    with pytest.raises(InvalidKeyError, match="state key is required"):
        await svc.delete_app_state("app", "")
    with pytest.raises(InvalidKeyError, match="state key is required"):
        await svc.delete_user_state(UserKey("app", "u"), "")
    with pytest.raises(InvalidKeyError, match="appName"):
        await svc.update_app_state("", {"a": b"1"})
    with pytest.raises(InvalidKeyError, match="userID"):
        await svc.list_user_states(UserKey("app", ""))


async def test_state_ttls(make_service, redis_client) -> None:
    """App and user state TTLs are applied on update."""
    svc = await make_service(app_state_ttl=20, user_state_ttl=30)
    await svc.update_app_state("app", {"a": b"1"})
    await svc.update_user_state(UserKey("app", "u"), {"a": b"1"})
    assert 0 < await redis_client.ttl(svc.keys.app_state("app")) <= 20
    assert 20 < await redis_client.ttl(svc.keys.user_state(UserKey("app", "u"))) <= 30


async def test_wrong_type_state_key_writes_nothing(make_service, redis_client) -> None:
    """A state key holding another Redis type gives CorruptDataError and stays untouched."""
    svc = await make_service()
    await redis_client.set(svc.keys.app_state("app"), b"x")
    with pytest.raises(CorruptDataError):
        await svc.update_app_state("app", {"a": b"1"})
    assert await redis_client.get(svc.keys.app_state("app")) == b"x"


async def test_update_session_state_rules(make_service) -> None:
    """app:/user:/empty keys are refused; a missing session is SessionNotFoundError."""
    svc = await make_service()
    s = await svc.create_session(Key("app", "u", "s"))
    with pytest.raises(InvalidKeyError, match=r"not allowed.*update_app_state"):
        await svc.update_session_state(s.key, {"app:x": b"1"})
    with pytest.raises(InvalidKeyError, match=r"not allowed.*update_user_state"):
        await svc.update_session_state(s.key, {"user:x": b"1"})
    with pytest.raises(InvalidKeyError, match="state key is required"):
        await svc.update_session_state(s.key, {"": b"1"})
    with pytest.raises(SessionNotFoundError):
        await svc.update_session_state(Key("app", "u", "missing"), {"x": b"1"})


async def test_update_session_state_merges_and_keeps_nil(make_service) -> None:
    """Existing keys are kept, a nil value reads back as None, tracks survive."""
    from sessionstreams.common.gotime import GoTime
    from sessionstreams.common.models import TrackEvent

    svc = await make_service()
    s = await svc.create_session(Key("app", "u", "s"), {"keep": b"1"})
    await svc.append_track_event(s, TrackEvent(track="t", payload=b"1", timestamp=GoTime.now()))
    await svc.update_session_state(s.key, {"new": b"2", "gone": None, "temp:x": b"t"})
    got = await svc.get_session(s.key)
    assert got.state["keep"] == b"1"
    assert got.state["new"] == b"2"
    assert got.state["gone"] is None
    assert "temp:x" not in got.state
    assert got.state["tracks"] == b'["t"]'


async def test_update_session_state_refreshes_updated_at(make_service) -> None:
    """update_session_state moves updatedAt forward."""
    svc = await make_service()
    s = await svc.create_session(Key("app", "u", "s"))
    await svc.update_session_state(s.key, {"x": b"1"})
    got = await svc.get_session(s.key)
    assert got.updated_at > s.created_at
