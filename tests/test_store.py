"""The assembled Store, and a caller's own redis.asyncio client given to SessionService."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from sessionstreams.common.errors import ConfigError
from sessionstreams.common.models import Event, Key
from sessionstreams.common.settings import Settings
from sessionstreams.common.store import Store
from sessionstreams.producer import SessionService


async def test_service_on_a_callers_client_leaves_it_open(
    make_settings: Callable[..., Settings],
) -> None:
    """SessionService(settings, client=...) reads and writes through the caller's client and
    close() does not close it: its owner does."""
    settings = make_settings()
    client = aioredis.Redis.from_url(settings.url, protocol=2)
    try:
        async with SessionService(settings, client=client) as svc:
            assert svc.client is client
            s = await svc.create_session(Key("app", "u", "s"))
            await svc.append_event(s, Event.message("user", "hi"))
        assert await client.exists(svc.keys.meta(s.key)) == 1  # still usable after close()
        got = await SessionService(settings, client=client).get_session(s.key)
        assert got is not None
        assert len(got.events) == 1
    finally:
        await client.aclose()


async def test_a_connection_pool_is_accepted(make_settings: Callable[..., Settings]) -> None:
    """A ConnectionPool is wrapped in a client of that pool."""
    settings = make_settings()
    pool = aioredis.ConnectionPool.from_url(settings.url, protocol=2)
    try:
        store = Store(settings, client=pool)
        assert store.client.connection_pool is pool
        assert not store.owns_client
        assert await store.client.ping()
    finally:
        await pool.aclose()


@pytest.mark.parametrize(("options", "message"), [
    ({"protocol": 2, "decode_responses": True}, "decode_responses=False"),
    ({"protocol": 3}, "protocol=2"),
    ({}, "protocol=2"),
])
def test_a_client_with_other_reply_shapes_is_refused(
    options: dict[str, Any], message: str
) -> None:
    """A client that decodes responses or speaks RESP3 is a ConfigError naming the fix."""
    client = aioredis.Redis(host="127.0.0.1", port=1, **options)
    with pytest.raises(ConfigError, match=message):
        Store(Settings(url="redis://127.0.0.1:1/0"), client=client)


def test_something_else_is_refused() -> None:
    """Only redis.asyncio clients and pools are accepted."""
    with pytest.raises(ConfigError, match=r"redis\.asyncio"):
        Store(Settings(url="redis://127.0.0.1:1/0"), client=object())


async def test_store_builds_and_closes_its_own_client(
    make_settings: Callable[..., Settings]
) -> None:
    """A store without a given client builds one from the settings and closes it."""
    store = Store(make_settings())
    assert store.owns_client
    await store.start()
    assert await store.client.ping()
    await store.aclose()
