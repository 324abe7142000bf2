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
from workers_harness import WorkerProcess

from sessionstreams.common.settings import Settings
from sessionstreams.producer import SessionService


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
