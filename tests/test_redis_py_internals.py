"""The parts of redis-py below its public API that sessionstreams relies on, checked by name.

A redis-py release that renames or removes one of them fails here, naming it, instead of
silently slowing writes down (``_clients.QuickWriteMixin`` falls back to redis-py's own path)
or breaking only under a failover (``durable``'s Cluster path, ``_clients`` Sentinel pool).
The supported range is the one pyproject.toml declares; CI runs the suite on its lowest
release (``bash ops/test.sh``, stage "lowest redis-py") and on the pinned one.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from packaging.requirements import Requirement
from packaging.version import Version
from redis.asyncio import cluster as aiocluster
from redis.asyncio.connection import Connection, ConnectionPool
from redis.asyncio.sentinel import SentinelConnectionPool

from redis_harness import RunningRedis, free_port
from sessionstreams.common._clients import RecyclingSentinelPool
from sessionstreams.common.connection import (
    TRANSIENT_ERRORS,
    ClusterUnreachableError,
    create_client,
)
from sessionstreams.common.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def _redis_requirement() -> Requirement:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for text in project["dependencies"]:
        requirement = Requirement(text)
        if requirement.name == "redis":
            return requirement
    raise AssertionError("pyproject.toml declares no redis dependency")


def test_installed_redis_py_is_in_the_declared_range() -> None:
    """The redis-py under test lies in pyproject's range, which has an upper bound."""
    requirement = _redis_requirement()
    assert any(spec.operator == "<" for spec in requirement.specifier)
    assert Version(redis.__version__) in requirement.specifier


def test_pool_and_connection_internals_used_by_quick_writes() -> None:
    """QuickWriteMixin reads a pool's ``_in_use_connections`` and a connection's ``_writer``,
    and relies on ``send_packed_command`` writing inline when ``socket_timeout`` is unset."""
    pool = ConnectionPool()
    assert len(pool._in_use_connections) == 0
    connection = pool.make_connection()
    assert hasattr(connection, "_writer")
    source = inspect.getsource(type(connection).send_packed_command)
    assert "if self.socket_timeout:" in source
    assert "asyncio.wait_for" in source


def test_connection_calls_used_by_transaction_reads() -> None:
    """common.quickread takes a connection from the pool without arguments, reads replies
    with ``read_response(timeout=math.inf)`` under one deadline of its own, and closes a
    connection whose replies it did not all read with ``disconnect(nowait=True)``."""
    for pool_class in (ConnectionPool, SentinelConnectionPool):
        get = inspect.signature(pool_class.get_connection).parameters
        assert all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                   for name, p in get.items() if name != "self")
    assert "nowait" in inspect.signature(Connection.disconnect).parameters
    assert "timeout" in inspect.signature(Connection.read_response).parameters


@pytest.mark.parametrize("args", [
    ("EVALSHA", "ab" * 20, 3, "k1", b"k2", "k\u00e9", 0, -17, b"\x00\xff", "", b""),
    ("HSET", "h", "f", "v" * 5000),
    ("SET", "k", 10**30),
    ("CONFIG GET", "maxmemory"),
    ("EXPIRE", "k", 1.5),
    ("SET", "k", True),
    ("SET", "k", memoryview(b"abc")),
])
async def test_quick_connections_pack_commands_as_redis_py_does(args: tuple[Any, ...]) -> None:
    """A quick connection packs every command byte for byte as redis-py's connection does
    (and refuses what it refuses): hiredis directly for str/bytes/int arguments, redis-py's
    path for anything else."""
    client = create_client(Settings(url="redis://127.0.0.1:1/0"))
    try:
        quick = client.connection_pool.make_connection()
        plain = Connection()
        assert type(quick).__name__ == "QuickConnection"
        try:
            expected = b"".join(plain.pack_command(*args))
        except redis.DataError:
            with pytest.raises(redis.DataError):
                quick.pack_command(*args)
            return
        assert b"".join(quick.pack_command(*args)) == expected
    finally:
        await client.aclose()


async def test_quick_writes_only_on_checked_redis_py_releases(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under a redis-py major release whose internals were not checked, clients keep
    redis-py's own connection class (the version guard of QuickWriteMixin)."""
    url = Settings(url="redis://127.0.0.1:1/0")
    checked = create_client(url)
    monkeypatch.setattr(redis, "__version__", "9.0.0")
    unchecked = create_client(url)
    try:
        assert checked.connection_pool.connection_class.__name__ == "QuickConnection"
        assert unchecked.connection_pool.connection_class is Connection
    finally:
        await checked.aclose()
        await unchecked.aclose()


async def test_a_cluster_without_a_reachable_node_is_cluster_unreachable() -> None:
    """No seed node answers: the Cluster client raises ClusterUnreachableError (redis-py 8.2's
    RedisClusterUnreachableError; on 8.0 and 8.1 ours, in place of a bare
    RedisClusterException), which the workers retry after and translate_errors maps to
    ConnectionFailedError."""
    client = create_client(Settings(url=f"redis+cluster://127.0.0.1:{free_port()}"))
    try:
        with pytest.raises(ClusterUnreachableError):
            await client.ping()
    finally:
        await client.aclose()
    assert issubclass(ClusterUnreachableError, TRANSIENT_ERRORS)


def test_cluster_internals_used_by_durable_writes() -> None:
    """The Cluster WAIT path (``common/durable.py``) drives one node's pipeline itself."""
    for name in ("move_slot", "move_node_to_end_of_cached_nodes"):
        assert callable(getattr(aiocluster.NodesManager, name, None)), name
    for name in ("execute_pipeline", "update_active_connections_for_reconnect",
                 "disconnect_free_connections"):  # fmt: skip
        assert callable(getattr(aiocluster.ClusterNode, name, None)), name
    assert list(inspect.signature(aiocluster.PipelineCommand).parameters)[:2] == [
        "position",
        "args",
    ]
    client = aioredis.RedisCluster(host="127.0.0.1", port=1)
    assert client._initialize is True  # read and set by durable's reconnect path
    assert isinstance(client.nodes_manager.connection_kwargs, dict)
    assert client.retry.get_retries() >= 0


async def test_recycling_pool_retires_idle_now_and_busy_on_release(
    redis_server: RunningRedis, key_prefix: str
) -> None:
    """After ``retire_connections`` an idle connection is closed at once, a busy one only
    when its command returns; the next commands use new connections."""

    class OneServer:
        """Stands in for the sentinels: always names the test server."""

        async def discover_master(self, service_name: str) -> tuple[str, int]:
            return redis_server.host, redis_server.port

    pool = RecyclingSentinelPool("primary", OneServer(), protocol=2)
    assert isinstance(pool, SentinelConnectionPool)
    client = aioredis.Redis(connection_pool=pool)
    admin = redis_server.client()
    try:
        task = asyncio.ensure_future(client.blpop([f"{key_prefix}:wake"], timeout=10))
        busy_id = await _wait_for_blocked_client(admin)
        idle_id = await client.client_id()  # a second connection, idle afterwards
        await pool.retire_connections()
        await _until(lambda ids: idle_id not in ids, admin)
        assert busy_id in await _client_ids(admin)  # not closed under its command
        await admin.rpush(f"{key_prefix}:wake", b"x")
        assert await task == (f"{key_prefix}:wake".encode(), b"x")
        await _until(lambda ids: busy_id not in ids, admin)
        assert await client.client_id() not in (idle_id, busy_id)
    finally:
        await client.aclose()
        await pool.disconnect()  # a pool given to a client is not closed by it
        await admin.aclose()


async def _client_ids(admin: aioredis.Redis) -> set[int]:
    return {int(c["id"]) for c in await admin.client_list()}


async def _wait_for_blocked_client(admin: aioredis.Redis) -> int:
    async def blocked() -> int | None:
        for c in await admin.client_list():
            if c.get("cmd") == "blpop":
                return int(c["id"])
        return None

    return await _poll(blocked)


async def _until(check: Any, admin: aioredis.Redis) -> None:
    async def done() -> bool | None:
        return True if check(await _client_ids(admin)) else None

    await _poll(done)


async def _poll(probe: Any, timeout_s: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        found = await probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        await asyncio.sleep(0.01)  # poll interval


async def test_sentinel_clients_use_the_recycling_pool() -> None:
    """A redis+sentinel:// client is built on the recycling pool."""
    client = create_client(Settings(url="redis+sentinel://127.0.0.1:1/primary"))
    try:
        assert isinstance(client.connection_pool, RecyclingSentinelPool)
    finally:
        await client.aclose()
