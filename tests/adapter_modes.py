"""Persistence modes for the agent-framework adapter tests (ADK, OpenAI Agents).

The ``persist_mode`` fixture runs a test twice: ``[sync]`` with synchronous persistence and
``[async]`` with ``enable_async_persist=True`` and a real worker subprocess
(``python -m sessionstreams.workers``) applying the streamed writes. Import it into a test module::

    from adapter_modes import PersistMode, persist_mode  # noqa: F401
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from topologies import cluster_target
from workers_harness import WorkerProcess

from sessionstreams.common.settings import Settings
from sessionstreams.producer import SessionService


def against(*references: str, cluster: bool = False) -> pytest.MarkDecorator:
    """Run a conformance test (its ``impl`` fixture) on our adapter in both modes (on Cluster
    too if asked) and on ``references``."""
    slow = pytest.mark.slow
    params = [pytest.param("sync", id="sync"), pytest.param("async", id="async", marks=slow)]
    if cluster:
        params += [pytest.param(m, id=m, marks=slow) for m in ("sync-cluster", "async-cluster")]
    params += [pytest.param(r, id=r) for r in references]
    return pytest.mark.parametrize("impl", params, indirect=True)


@dataclass
class PersistMode:
    """How a test persists: its services all share the test's key prefix."""

    name: str  # "sync" or "async"
    worker: WorkerProcess | None  # the worker process of async mode
    _build: Callable[..., Awaitable[SessionService]]
    services: list[SessionService] = field(default_factory=list)

    @property
    def is_async(self) -> bool:
        return self.name == "async"

    async def service(self, **overrides: Any) -> SessionService:
        """A SessionService in this mode (closed after the test)."""
        return await self._build(**overrides)


@pytest.fixture(params=["sync", pytest.param("async", marks=pytest.mark.slow)])
async def persist_mode(
    request: pytest.FixtureRequest,
    make_service: Callable[..., Awaitable[Any]],
    pipeline_settings: Callable[..., Settings],
    start_worker: Callable[..., WorkerProcess],
) -> AsyncIterator[PersistMode]:
    """Sync mode, or async mode with one worker process (started before the test runs)."""
    if request.param == "sync":
        yield PersistMode("sync", None, make_service)
        return
    built: list[SessionService] = []
    worker = start_worker(pipeline_settings())

    async def build(**overrides: Any) -> SessionService:
        service = SessionService(pipeline_settings(**overrides))
        built.append(service)
        return service

    try:
        yield PersistMode("async", worker, build, built)
    finally:
        if worker.alive():
            worker.resume()  # a test may leave it paused; closing flushes through it
        for service in reversed(built):
            await service.close()


#: Our persistence modes and topologies as conformance tests name them.
OUR_MODES = ("sync", "async", "sync-cluster", "async-cluster")


@dataclass
class OurBackend:
    """Our store in one mode (``sync``/``async``) on one topology (standalone/``-cluster``):
    build any number of services on it, as several processes would (closed after the test)."""

    mode: str
    settings: Settings
    worker: WorkerProcess | None
    _built: list[SessionService]

    @property
    def is_async(self) -> bool:
        return self.worker is not None

    def service(self) -> SessionService:
        """Another SessionService on the same store and key prefix."""
        service = SessionService(self.settings)
        self._built.append(service)
        return service


@pytest.fixture
async def our_backend(
    request: pytest.FixtureRequest,
    make_settings: Callable[..., Settings],
    pipeline_settings: Callable[..., Settings],
    start_worker: Callable[..., WorkerProcess],
) -> AsyncIterator[Callable[..., OurBackend]]:
    """Build an :class:`OurBackend` for a mode of :data:`OUR_MODES` (settings as overrides).

    The ``-cluster`` modes run on the shared 3-primary Cluster; ``async`` modes start one
    worker process on the mode's settings.
    """
    built: list[SessionService] = []

    def build(mode: str, **overrides: Any) -> OurBackend:
        persist, _, topology = mode.partition("-")
        if topology == "cluster":
            cluster = request.getfixturevalue("redis_cluster")
            overrides.setdefault("url", cluster_target(cluster).url)
        if persist == "sync":
            return OurBackend(mode, make_settings(**overrides), None, built)
        settings = pipeline_settings(**overrides)
        return OurBackend(mode, settings, start_worker(settings), built)

    try:
        yield build
    finally:
        for service in reversed(built):
            await service.close()
