"""Shared fixtures: real Redis topologies per test session, a key prefix per test, factories.

``redis_server`` is ``REDIS_URL`` when set, else a testcontainers Redis when a Docker engine
answers, else a ``redis-server`` started on a free loopback port (see ``redis_harness``).
Tests never flush a database: each one writes under its own ``key_prefix``.

Topologies (see ``topologies``): ``redis_cluster`` (3 primaries) and ``redis_sentinel``
(primary, replica, 3 sentinels) are started once per session, on first use. Tests that break
a topology (SIGKILL, failover, reshard) build their own with ``make_cluster`` /
``make_sentinel_group``. ``redis_target`` is the deployment a test runs against; the fixtures
built on it (``make_settings``, ``make_service``, ``redis_client``) follow it:

- ``SESSIONSTREAMS_TEST_TOPOLOGY=standalone|cluster|sentinel`` (comma-separated, or ``all``)
  picks the topologies of every such test (default ``standalone``);
- ``@pytest.mark.topologies("cluster", "sentinel")`` on a test or module adds topologies in
  every run, and so does listing the module in ``ALL_TOPOLOGY_SUITES``. These extra runs are
  marked ``slow``; with more than one topology, test ids get ``[cluster]`` / ``[sentinel]``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import structlog
from topologies import (
    RedisTarget,
    RunningCluster,
    RunningSentinelGroup,
    cluster_target,
    sentinel_target,
    standalone_target,
    start_cluster,
    start_sentinel_group,
)

from redis_harness import RunningRedis, provide_redis_server
from sessionstreams.common import connection
from sessionstreams.common.logs import reset_logging
from sessionstreams.common.settings import Settings

pytest_plugins = ["workers_harness", "otel_harness", "adapter_modes"]

TOPOLOGY_ENV = "SESSIONSTREAMS_TEST_TOPOLOGY"
TOPOLOGIES = ("standalone", "cluster", "sentinel")
#: Suites that run on every topology in every run (the session API on Cluster and Sentinel).
ALL_TOPOLOGY_SUITES = frozenset({"test_sessions", "test_events", "test_state", "test_tracks"})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "topologies(*kinds): also run the test on these Redis topologies "
        "(standalone, cluster, sentinel) through the redis_target fixture",
    )


def base_topologies() -> list[str]:
    """The topologies named by SESSIONSTREAMS_TEST_TOPOLOGY (default: standalone)."""
    text = os.environ.get(TOPOLOGY_ENV, "").strip().lower() or "standalone"
    kinds = list(TOPOLOGIES) if text == "all" else [k.strip() for k in text.split(",") if k]
    unknown = [k for k in kinds if k not in TOPOLOGIES]
    if unknown or not kinds:
        raise pytest.UsageError(f"{TOPOLOGY_ENV}: unknown topology {unknown}; use {TOPOLOGIES}")
    return kinds


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``redis_target`` by topology (env plus ``topologies`` markers)."""
    if "redis_target" not in metafunc.fixturenames:
        return
    base = base_topologies()
    wanted = set(base)
    if metafunc.module.__name__.rpartition(".")[2] in ALL_TOPOLOGY_SUITES:
        wanted.update(TOPOLOGIES)
    for marker in metafunc.definition.iter_markers("topologies"):
        unknown = [k for k in marker.args if k not in TOPOLOGIES]
        if unknown:
            raise pytest.UsageError(f"{metafunc.definition.nodeid}: unknown topology {unknown}")
        wanted.update(marker.args)
    kinds = [k for k in TOPOLOGIES if k in wanted]
    if kinds == ["standalone"]:
        return  # the default: no parameter, test ids unchanged
    params = [  # the runs beyond the selected topologies are the slow extras
        pytest.param(k, id=k, marks=() if k in base else (pytest.mark.slow,)) for k in kinds
    ]
    metafunc.parametrize("redis_target", params, indirect=True)


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


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    """A 3-primary Redis Cluster shared by the test session (do not break it: see
    ``make_cluster``)."""
    try:
        cluster = start_cluster(tmp_path_factory.mktemp("cluster"))
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSentinelGroup]:
    """A Sentinel group (primary, replica, 3 sentinels, quorum 2) shared by the session.

    Its ``down-after-milliseconds`` is 5000, so a loaded machine does not cause a failover;
    failover tests build their own group with ``make_sentinel_group``.
    """
    try:
        group = start_sentinel_group(tmp_path_factory.mktemp("sentinel"), down_after_ms=5000)
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield group
    finally:
        group.stop()


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., RunningCluster]]:
    """Build private clusters (``start_cluster`` keywords); all stopped after the test."""
    built: list[RunningCluster] = []

    def build(**options: Any) -> RunningCluster:
        cluster = start_cluster(tmp_path / f"cluster-{len(built)}", **options)
        built.append(cluster)
        return cluster

    try:
        yield build
    finally:
        for cluster in built:
            cluster.stop()


@pytest.fixture
def make_sentinel_group(tmp_path: Path) -> Iterator[Callable[..., RunningSentinelGroup]]:
    """Build private Sentinel groups (``start_sentinel_group`` keywords: replicas,
    sentinels, quorum, down_after_ms, ...); all stopped after the test."""
    built: list[RunningSentinelGroup] = []

    def build(**options: Any) -> RunningSentinelGroup:
        group = start_sentinel_group(tmp_path / f"sentinel-{len(built)}", **options)
        built.append(group)
        return group

    try:
        yield build
    finally:
        for group in built:
            group.stop()


@pytest.fixture
def redis_target(request: pytest.FixtureRequest) -> RedisTarget:
    """The deployment this test runs on (see the module docstring)."""
    kind = getattr(request, "param", None) or base_topologies()[0]
    if kind == "cluster":
        return cluster_target(request.getfixturevalue("redis_cluster"))
    if kind == "sentinel":
        return sentinel_target(request.getfixturevalue("redis_sentinel"))
    return standalone_target(request.getfixturevalue("redis_server"))


@pytest.fixture
def key_prefix() -> str:
    """A key prefix no other test uses, e.g. ``t1a2b3c4d``."""
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def redis_client(redis_target: RedisTarget) -> AsyncIterator[aioredis.Redis]:
    """A RESP2, bytes-returning admin client of ``redis_target`` (a RedisCluster on
    Cluster), closed after the test."""
    client = redis_target.client()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def make_settings(redis_target: RedisTarget, key_prefix: str) -> Callable[..., Settings]:
    """Build Settings for ``redis_target`` and this test's prefix; overrides win."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"url": redis_target.url, "key_prefix": key_prefix}
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
        from sessionstreams.producer import SessionService  # lazy: the harness must work without it

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
    """Undo process-wide configuration a test made (structlog and our root log handler,
    OpenTelemetry tracer and meter providers, connection registry)."""
    from otel_harness import reset_telemetry  # a plugin: imported once pytest registered it

    yield
    reset_logging()
    structlog.reset_defaults()
    reset_telemetry()
    connection.reset_global_state()
