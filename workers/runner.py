"""A worker process: heartbeats, shard leases, one consumer task per held shard.

SIGTERM (or SIGINT): stop reading, finish and acknowledge the batch in hand, release the
leases, leave the worker registry, exit 0; all within ``lease_ttl_s``. When Redis does not
answer in that time (paused, unreachable) the worker gives up, exits 1 and the leases expire:
the next owner re-reads what was not acknowledged, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import uuid
from collections.abc import Coroutine
from typing import Any

from sessionstreams.common.connection import (
    REDIS_ERRORS,
    check_server,
    redact_url,
    start_failover_watch,
)
from sessionstreams.common.errors import ConfigError, ConnectionFailedError, StoreTimeoutError
from sessionstreams.common.logs import get_logger
from sessionstreams.common.settings import Settings
from sessionstreams.common.shards import ShardKeys, check_conf, workers_key
from sessionstreams.common.store import Store
from sessionstreams.workers import telemetry
from sessionstreams.workers.apply import Applier
from sessionstreams.workers.faults import Faults
from sessionstreams.workers.leases import Leases
from sessionstreams.workers.observe import WorkerObservability
from sessionstreams.workers.persist import ShardConsumer
from sessionstreams.workers.summaries import run_alongside
from sessionstreams.workers.summary_jobs import SummaryJobs

log = get_logger("sessionstreams.worker")

#: How long closing a client may take at exit (a paused server never answers).
CLOSE_TIMEOUT_S = 1.0
#: Backoff of the start checks while Redis does not answer (doubling up to the max).
START_RETRY_FIRST_S = 0.2
START_RETRY_MAX_S = 5.0


def shares(shards: int, live: list[str], me: str) -> int:
    """This worker's share: shards split by rank among live workers (max - min <= 1)."""
    ranked = sorted(set(live) | {me})
    base, extra = divmod(shards, len(ranked))
    return base + (1 if ranked.index(me) < extra else 0)


class Worker:
    """Persists streamed writes for the shards it holds."""

    def __init__(self, settings: Settings, worker_id: str | None = None) -> None:
        self.settings = settings
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.store = Store(settings)
        self.stream_store = self.store.sibling("stream")
        self.client = self.store.client
        self.stream_client = self.stream_store.client
        self.keys = self.store.keys
        self.scripts = self.store.scripts
        self.faults = Faults()
        n = settings.async_persister_num
        self.shard_keys = [ShardKeys(settings.key_prefix, i, n) for i in range(n)]
        self.obs = WorkerObservability(settings, self.worker_id)
        self.leases = Leases(self.client, self.scripts, self.shard_keys,
                             workers_key(settings.key_prefix), self.worker_id,
                             settings.lease_ttl_s, on_change=self.obs.lease_changed)
        self.obs.count_held(lambda: len(self.leases.held))
        self.applier = Applier.for_store(self.store, self.faults)
        # Summary streams are consumed only by workers given a summarizer (--summarizer).
        self.summary_jobs = (
            SummaryJobs(self.store, self.faults, self.worker_id)
            if settings.summarizer is not None else None
        )
        self.consumers: dict[int, tuple[ShardConsumer, asyncio.Task[None]]] = {}
        self.stopping = asyncio.Event()
        self._registered = False
        self.exit_code = 0
        self.log = log.bind(worker=self.worker_id)

    # -- lifecycle ----------------------------------------------------------------------
    async def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns the exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        sampler = asyncio.create_task(
            self.obs.sample_shards(self.client, self.shard_keys, self.stopping))
        started = False
        try:
            # Sentinel: follow +switch-master from the start, also on the stream client,
            # whose first command may come much later (an idle worker).
            start_failover_watch(self.client)
            start_failover_watch(self.stream_client)
            if await self._until_stopped(self._wait_for_redis()):
                self.log.info("worker started", shards=len(self.shard_keys),
                              url=redact_url(self.settings.url))
                started = True
                await self._until_stopped(self._coordinate())
        except ConfigError as exc:
            if not started:  # refused at start (evicting maxmemory-policy, shard count)
                raise
            self.log.error("stopping: configuration changed", error=str(exc))
            self.exit_code = 3
        finally:
            sampler.cancel()
            await _settle(sampler)
            if not await self._shutdown() and self.exit_code == 0:
                self.exit_code = 1
        return self.exit_code

    async def _until_stopped(self, work: Coroutine[Any, Any, None]) -> bool:
        """Run ``work`` until it ends or SIGTERM; a pass blocked on Redis is abandoned then
        (coordination is idempotent: the next owner or start redoes it). Returns True when
        ``work`` ended by itself."""
        task = asyncio.create_task(work)
        stop = asyncio.create_task(self.stopping.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task  # its exception (a ConfigError) is the run's
        return not task.cancelled()

    async def _wait_for_redis(self) -> None:
        """The start checks (server, shard configuration), retried with backoff while Redis
        does not answer: a worker may start before Redis (a deployment's start order, a
        restart). A refusal (eviction policy, shard count) is a ConfigError, raised."""
        delay = START_RETRY_FIRST_S
        while True:
            try:
                await check_server(self.client, url=self.settings.url or None)
                await check_conf(self.client, self.scripts, self.settings.key_prefix,
                                 len(self.shard_keys))
                return
            except (ConnectionFailedError, StoreTimeoutError, *REDIS_ERRORS, OSError) as exc:
                self.log.warning("waiting for redis", error=str(exc), retry_in_s=delay,
                                 url=redact_url(self.settings.url))
            await asyncio.sleep(delay)
            delay = min(delay * 2, START_RETRY_MAX_S)

    async def _coordinate(self) -> None:
        self._registered = True  # from the first heartbeat on, leave the registry at exit
        interval = self.settings.heartbeat_interval_s
        hb_ttl = max(self.settings.lease_ttl_s, 3 * interval)
        while not self.stopping.is_set():
            try:
                # A resize (`sessionstreams shards resize`) changes the count in force: a
                # worker started with the old count stops, to be restarted with the new one.
                await check_conf(self.client, self.scripts, self.settings.key_prefix,
                                 len(self.shard_keys))
                live = await self.leases.heartbeat(hb_ttl)
                for shard in await self.leases.renew_all():
                    self.log.warning("lease lost", shard=shard)
                    self._stop_consumer(shard)
                await self._rebalance(live)
                await self._reap()
            except (*REDIS_ERRORS, OSError) as exc:
                # Redis unreachable for a while (failover, reshard): keep the process. A
                # consumer whose lease is not renewed stops at its local deadline; the next
                # successful pass renews, or finds the lease lost and takes shards again.
                self.log.warning("coordination failed; retrying", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout=interval)

    async def _rebalance(self, live: list[str]) -> None:
        target = shares(len(self.shard_keys), live, self.worker_id)
        held = sorted(self.leases.held)
        for shard in held[target:]:
            self.log.info("releasing shard to rebalance", shard=shard, target=target)
            await self._stop_and_release(shard)
        if len(self.leases.held) >= target:
            return
        free = [s for s in range(len(self.shard_keys)) if s not in self.leases.held]
        random.shuffle(free)
        for shard in free:
            if len(self.leases.held) >= target:
                break
            lease = await self.leases.try_acquire(shard)
            if lease is not None:
                self._start_consumer(shard)

    def _start_consumer(self, shard: int) -> None:
        consumer = ShardConsumer(
            shard_keys=self.shard_keys[shard], lease=self.leases.held[shard], client=self.client,
            stream_client=self.stream_client, scripts=self.scripts, keys=self.keys,
            applier=self.applier, settings=self.settings, faults=self.faults,
            worker_id=self.worker_id, hooks=self.obs.hooks_for(shard),
        )
        run = consumer.run() if self.summary_jobs is None else run_alongside(
            self.summary_jobs, consumer, self.stream_client, self.worker_id)
        task = asyncio.create_task(run, name=f"shard-{shard}")
        self.consumers[shard] = (consumer, task)
        self.log.info("shard taken", shard=shard)

    def _stop_consumer(self, shard: int) -> None:
        entry = self.consumers.get(shard)
        if entry is not None:
            entry[0].stop.set()

    async def _stop_and_release(self, shard: int) -> None:
        entry = self.consumers.pop(shard, None)
        if entry is not None:
            entry[0].stop.set()
            await _settle(entry[1])
        await self.leases.release(shard)

    async def _reap(self) -> None:
        """Forget consumers that ended by themselves (lease lost or crash); release the lease."""
        for shard, (_, task) in list(self.consumers.items()):
            if task.done():
                self.consumers.pop(shard)
                await _settle(task)
                await self.leases.release(shard)

    async def _shutdown(self) -> bool:
        """Finish the batches in hand, release the leases and leave, within ``lease_ttl_s``
        (after which the leases expire anyway). Returns True when all of it was done."""
        tasks = [task for _, task in self.consumers.values()]
        for consumer, _ in self.consumers.values():
            consumer.stop.set()
        clean = True
        try:
            async with asyncio.timeout(self.settings.lease_ttl_s):
                for shard in list(self.consumers):
                    await self._stop_and_release(shard)
                for shard in list(self.leases.held):
                    await self.leases.release(shard)
                if self._registered:
                    await self.leases.leave()
        except (TimeoutError, *REDIS_ERRORS, OSError) as exc:
            clean = False
            self.log.error("shutdown incomplete: Redis did not answer; the leases expire and "
                           "the next owner re-reads what was not acknowledged",
                           error=repr(exc), within_s=self.settings.lease_ttl_s)
            for task in tasks:
                task.cancel()
            for task in tasks:
                await _settle(task)
        for store in (self.store, self.stream_store):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(store.aclose(), CLOSE_TIMEOUT_S)
        self.log.info("worker stopped", clean=clean)
        return clean


async def _settle(task: asyncio.Task[Any]) -> None:
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # this task is being cancelled (a timeout), not only the awaited one
    except Exception as exc:  # a crashed consumer must not stop the shutdown
        log.error("shard consumer crashed", error=repr(exc))


def run_worker(
    settings: Settings,
    *,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
    trace_file: str | None = None,
) -> int:
    """Entry point of ``sessionstreams worker`` / ``python -m sessionstreams.workers``.

    ``metrics_port`` serves Prometheus metrics, ``trace_file`` exports spans as JSON lines
    (see :mod:`sessionstreams.workers.telemetry`).
    """
    tel = telemetry.setup(settings, metrics_port=metrics_port, metrics_host=metrics_host,
                          trace_file=trace_file)
    try:
        return asyncio.run(Worker(tel.settings).run())
    finally:
        tel.shutdown()
