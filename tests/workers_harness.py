"""Worker processes for tests: real ``python -m sessionstreams.workers`` subprocesses on the test's
Redis.

Fixtures (re-exported by conftest.py):

- ``pipeline_settings(**overrides)``: Settings for async mode on this test's key prefix, with
  short leases and heartbeats so ownership changes happen within seconds;
- ``start_worker(settings=None, faults="", name=None, args=(), env=None)``: starts a
  worker process (``args`` after ``python -m sessionstreams.workers``, ``env`` over the
  settings' variables),
  returns a :class:`WorkerProcess`; every worker still running at the end of the test is
  killed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from sessionstreams.common.settings import Settings

ROOT = Path(__file__).resolve().parents[1]

_ENV_FIELDS = (
    "url", "key_prefix", "async_persister_num", "lease_ttl_s", "heartbeat_interval_s",
    "block_ms", "dead_letter_after_failures", "worker_batch_size", "session_ttl",
)


class WorkerProcess:
    """A running worker subprocess."""

    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path, name: str) -> None:
        self.proc = proc
        self.log_path = log_path
        self.name = name

    @property
    def pid(self) -> int:
        """The process id."""
        return self.proc.pid

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no drain, no lease release."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def pause(self) -> None:
        """SIGSTOP: the process freezes where it is (a stalled owner)."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT."""
        self.proc.send_signal(signal.SIGCONT)

    def log(self) -> str:
        """What the worker wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def worker_env(settings: Settings, faults: str = "") -> dict[str, str]:
    """The environment that gives a worker process these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONSTREAMS_")}
    for name in _ENV_FIELDS:
        env[f"SESSIONSTREAMS_{name.upper()}"] = str(getattr(settings, name))
    if faults:
        env["SESSIONSTREAMS_FAULTS"] = faults
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture
def pipeline_settings(make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    """Async-mode settings on the test's prefix, with short leases (overrides win)."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "enable_async_persist": True,
            "async_persister_num": 4,
            "lease_ttl_s": 2.0,
            "heartbeat_interval_s": 0.25,
            "block_ms": 200,
            "read_your_writes_wait_s": 20.0,
            "dead_letter_after_failures": 3,
        }
        values.update(overrides)
        return make_settings(**values)

    return build


@pytest.fixture
def start_worker(
    pipeline_settings: Callable[..., Settings], tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker subprocesses; all are killed at the end of the test."""
    started: list[WorkerProcess] = []

    def start(
        settings: Settings | None = None,
        faults: str = "",
        name: str | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> WorkerProcess:
        name = name or f"w{len(started)}"
        log_path = tmp_path / f"{name}.log"
        with log_path.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "sessionstreams.workers", *args],
                env={**worker_env(settings or pipeline_settings(), faults), **(env or {})},
                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
            )
        worker = WorkerProcess(proc, log_path, name)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.alive():
            worker.resume()
            worker.kill()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until true; fail the test with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


async def eventually(
    predicate: Callable[[], Awaitable[bool]], timeout: float, what: str
) -> float:
    """Await ``predicate`` until true; returns the seconds it took, fails at the deadline."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if await predicate():
            return time.monotonic() - start
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")
