"""Shared fixtures: one real Redis per test session, a key prefix per test, factories.

``redis_server`` is ``REDIS_URL`` when set, else a testcontainers Redis when a Docker engine
answers, else a ``redis-server`` started on a free loopback port (see ``redis_harness``).
Tests never flush a database: each one writes under its own ``key_prefix``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
import structlog

from common import connection
from common.settings import Settings
from redis_harness import RunningRedis, provide_redis_server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRedis]:
    """The Redis server shared by the whole test session."""
    try:
        context = provide_redis_server(tmp_path_factory.mktemp("redis"))
        server = context.__enter__()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        context.__exit__(None, None, None)


@pytest.fixture
def key_prefix() -> str:
    """A key prefix no other test uses, e.g. ``t1a2b3c4d``."""
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def redis_client(redis_server: RunningRedis) -> AsyncIterator[aioredis.Redis]:
    """A RESP2, bytes-returning client on the shared server, closed after the test."""
    client = aioredis.Redis.from_url(redis_server.url, protocol=2)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def make_settings(redis_server: RunningRedis, key_prefix: str) -> Callable[..., Settings]:
    """Build Settings for the shared server and this test's prefix; overrides win."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"url": redis_server.url, "key_prefix": key_prefix}
        values.update(overrides)
        return Settings(**values)

    return build


@pytest.fixture
async def make_service(
    make_settings: Callable[..., Settings],
) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Build ``producer.SessionService`` objects; every one is closed after the test."""
    built: list[Any] = []

    async def build(**overrides: Any) -> Any:
        from producer import SessionService  # lazy: the harness must work without it

        service = SessionService(make_settings(**overrides))
        built.append(service)
        return service

    try:
        yield build
    finally:
        for service in reversed(built):
            await service.close()


@pytest.fixture(autouse=True)
def _reset_global_state() -> Iterator[None]:
    """Undo process-wide configuration a test made (structlog, connection registry)."""
    yield
    structlog.reset_defaults()
    connection.reset_global_state()
