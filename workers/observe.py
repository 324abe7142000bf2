"""Tracing, metrics and log binding of a worker, as hooks around its consume loop.

The loop (:mod:`sessionstreams.workers.persist`) stays business logic: its apply step is wrapped by
:meth:`ConsumerHooks.around`, and it reports redeliveries, failures and dead letters to the
hooks. :class:`WorkerObservability` builds one :class:`ConsumerHooks` per shard.

Around every apply step ``shard`` and ``worker`` are bound for log lines (structlog
contextvars). With ``Settings.enable_tracing`` every entry gets a span (``apply_event``,
``apply_track_event``, ``apply_session_state``) whose parent is the producer's span, taken
from the entry's ``traceparent``: one trace shows an append from the agent to its
persistence; a summary job run gets a ``summary_job`` span continuing the trace of the
request that queued it (:func:`summary_job_span`). With ``Settings.metrics_enabled`` these
instruments are recorded (meter ``trpc_agent_go.session.redis``):

=============================================  ===========  ==================================
name                                           kind         attributes
=============================================  ===========  ==================================
``sessionstreams.worker.outcomes``             counter      shard, kind, outcome (applied,
                                                            duplicate, session_gone,
                                                            superseded, dead_lettered)
``sessionstreams.worker.failures``             counter      shard (data failures, retried)
``sessionstreams.worker.dead_letters``         counter      shard
``sessionstreams.worker.redeliveries``         counter      shard (entries re-read from the
                                                            pending list)
``sessionstreams.worker.lease_changes``        counter      shard, change (acquired,
                                                            released, lost)
``sessionstreams.worker.apply.duration``       histogram s  shard (one apply step)
``sessionstreams.worker.persist_delay``        histogram s  shard (XADD to outcome)
``trpc_agent_go.session.redis.append_event_    counter      storage (as Go: a persisted
count``                                                     event)
``sessionstreams.worker.shards_held``          gauge
``sessionstreams.shard.backlog`` / ``.lag`` /  gauges       shard (sampled every heartbeat;
``.pending`` / ``.oldest_unacked_age`` /                    every worker reports every
``.dead_letters``                                           shard: aggregate with max)
=============================================  ===========  ==================================
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import structlog
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer

from sessionstreams.common.entries import SummaryJob
from sessionstreams.common.logs import get_logger
from sessionstreams.common.settings import Settings
from sessionstreams.common.shards import ShardKeys
from sessionstreams.common.tracing import (
    GO_COUNTER_PREFIX,
    context_from_traceparent,
    duration_histogram,
    key_attributes,
    meter,
    tracer,
)
from sessionstreams.workers import admin
from sessionstreams.workers.apply import Item, State

log = get_logger("sessionstreams.worker")

SPAN_NAMES = {"event": "apply_event", "track": "apply_track_event", "state": "apply_session_state"}


@contextlib.contextmanager
def summary_job_span(t: Tracer | None, job: SummaryJob, **attrs: Any) -> Iterator[Span | None]:
    """The span of one summary job run (None without tracing), continuing the trace of the
    request that queued it; an exception leaving it marks the span as an error."""
    if t is None:
        yield None
        return
    attributes = {**key_attributes(job), "storage": job.route, "filter_key": job.filter_key,
                  **attrs}
    with t.start_as_current_span("summary_job", context=context_from_traceparent(
            job.traceparent), kind=SpanKind.CONSUMER, attributes=attributes) as span:
        yield span


class ApplyStep(Protocol):
    """What the consume loop calls to apply a batch (an Applier, or one wrapped by hooks)."""

    async def apply(self, items: list[Item], check_lease: Callable[[], None]) -> None:
        """Apply ``items``; set each item's state."""


class ConsumerHooks:
    """Hooks of one shard's consume loop; this base does nothing."""

    def around(self, applier: ApplyStep) -> ApplyStep:
        """The apply step the loop calls (the applier itself here)."""
        return applier

    def redelivered(self, count: int) -> None:
        """``count`` entries were read again from the pending list."""

    def failed(self, item: Item) -> None:
        """An entry failed (it is retried, or dead-lettered at the threshold)."""

    def dead_lettered(self, item: Item) -> None:
        """An entry went to the dead-letter stream."""


NO_HOOKS = ConsumerHooks()


def _entry_age_s(entry_id: str) -> float:
    """Seconds since the stream entry was added (its id starts with the XADD time in ms)."""
    return max(time.time() - int(entry_id.split("-", 1)[0]) / 1000, 0.0)


class WorkerMetrics:
    """The worker's instruments, and the shard figures its gauges report."""

    def __init__(self, m: metrics.Meter) -> None:
        self.outcomes = m.create_counter(
            "sessionstreams.worker.outcomes", unit="{entry}",
            description="Entries that reached a final outcome")
        self.failures = m.create_counter(
            "sessionstreams.worker.failures", unit="{entry}",
            description="Data failures of entries (each retried until dead-lettered)")
        self.dead_letters = m.create_counter(
            "sessionstreams.worker.dead_letters", unit="{entry}",
            description="Entries moved to the dead-letter stream")
        self.redeliveries = m.create_counter(
            "sessionstreams.worker.redeliveries", unit="{entry}",
            description="Entries read again from the pending list")
        self.lease_changes = m.create_counter(
            "sessionstreams.worker.lease_changes", unit="{change}",
            description="Shard leases acquired, released or lost")
        self.go_appends = m.create_counter(f"{GO_COUNTER_PREFIX}append_event_count", unit="1")
        self.apply_duration = duration_histogram(
            m, "sessionstreams.worker.apply.duration", "One apply step of a batch")
        self.persist_delay = duration_histogram(
            m, "sessionstreams.worker.persist_delay", "From XADD to the entry's outcome")
        self.shards: dict[int, admin.ShardStatus] = {}
        self.held: Callable[[], int] = lambda: 0
        m.create_observable_gauge(
            "sessionstreams.worker.shards_held", [self._observe_held], unit="{shard}",
            description="Shards this worker holds a lease on")
        for name, unit, what in (
            ("backlog", "{entry}", "Entries in the shard stream"),
            ("lag", "{entry}", "Entries not yet read by any worker"),
            ("pending", "{entry}", "Entries read but not acknowledged"),
            ("oldest_unacked_age", "s", "Age of the oldest unacknowledged entry"),
            ("dead_letters", "{entry}", "Entries in the shard's dead-letter stream"),
        ):
            m.create_observable_gauge(f"sessionstreams.shard.{name}",
                                      [self._shard_observer(name)], unit=unit, description=what)

    def _observe_held(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self.held())]

    def _shard_observer(self, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        field = "oldest_unacked_age_s" if name == "oldest_unacked_age" else name

        def observe(options: CallbackOptions) -> Iterable[Observation]:
            out = []
            for shard, st in list(self.shards.items()):
                value = getattr(st, field)
                if value is None:
                    value = 0
                out.append(Observation(value, {"shard": shard}))
            return out

        return observe


class WorkerObservability:
    """The tracer and metrics of one worker process; builds the per-shard hooks."""

    def __init__(self, settings: Settings, worker_id: str) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self.tracer = tracer() if settings.enable_tracing else None
        self.metrics = WorkerMetrics(meter()) if settings.metrics_enabled else None

    def hooks_for(self, shard: int) -> ConsumerHooks:
        """The hooks of one shard's consumer."""
        return ShardHooks(self, shard)

    def lease_changed(self, shard: int, change: str) -> None:
        """A lease was ``acquired``, ``released`` or ``lost``."""
        if self.metrics is not None:
            self.metrics.lease_changes.add(1, {"shard": shard, "change": change})

    def count_held(self, held: Callable[[], int]) -> None:
        """Where the ``shards_held`` gauge reads its value."""
        if self.metrics is not None:
            self.metrics.held = held

    async def sample_shards(self, client: Any, shard_keys: list[ShardKeys],
                            stop: asyncio.Event) -> None:
        """Refresh the shard gauges every heartbeat interval until ``stop`` (metrics on)."""
        if self.metrics is None:
            return
        while not stop.is_set():
            for sk in shard_keys:
                try:
                    self.metrics.shards[sk.shard] = await admin.shard_status(
                        client, sk, self.settings)
                except Exception as exc:  # a sample missed is not worth stopping for
                    log.info("shard sample failed", shard=sk.shard, error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.heartbeat_interval_s)


class ShardHooks(ConsumerHooks):
    """Log binding always; spans and metrics when enabled."""

    def __init__(self, obs: WorkerObservability, shard: int) -> None:
        self.obs = obs
        self.shard = shard
        self.attrs = {"shard": shard}

    def around(self, applier: ApplyStep) -> ApplyStep:
        return ObservedApply(applier, self)

    def redelivered(self, count: int) -> None:
        if self.obs.metrics is not None and count:
            self.obs.metrics.redeliveries.add(count, self.attrs)

    def failed(self, item: Item) -> None:
        if self.obs.metrics is not None:
            self.obs.metrics.failures.add(1, self.attrs)

    def dead_lettered(self, item: Item) -> None:
        m = self.obs.metrics
        if m is not None:
            m.dead_letters.add(1, self.attrs)
            kind = item.entry.kind if item.entry is not None else "undecodable"
            m.outcomes.add(1, {**self.attrs, "kind": kind, "outcome": "dead_lettered"})
            m.persist_delay.record(_entry_age_s(item.entry_id), self.attrs)

    # -- around one apply step ------------------------------------------------------------
    def start_spans(self, items: list[Item]) -> list[Span]:
        """One span per entry, child of the producer's span when the entry carries one."""
        t = self.obs.tracer
        if t is None:
            return []
        spans = []
        for item in items:
            e = item.entry
            attrs: dict[str, Any] = {"shard": self.shard, "worker": self.obs.worker_id,
                                     "entry_id": item.entry_id, "attempt": item.failures + 1}
            if e is None:
                spans.append(t.start_span("apply_undecodable", kind=SpanKind.CONSUMER,
                                          attributes=attrs))
                continue
            attrs.update(key_attributes(e), storage=e.route, kind=e.kind)
            spans.append(t.start_span(
                SPAN_NAMES.get(e.kind, "apply_entry"), context=context_from_traceparent(
                    e.traceparent), kind=SpanKind.CONSUMER, attributes=attrs))
        return spans

    def finish(self, items: list[Item], spans: list[Span], seconds: float,
               error: BaseException | None) -> None:
        """End the spans with each entry's outcome; record the outcome metrics."""
        for item, span in zip(items, spans, strict=False):  # no spans without tracing
            if error is not None:
                span.record_exception(error)
                span.set_status(StatusCode.ERROR, type(error).__name__)
            elif item.state is State.DONE:
                span.set_attribute("outcome", item.outcome)
            elif item.state is State.FAILED:
                span.set_attribute("outcome", "failed")
                span.set_status(StatusCode.ERROR, item.error)
            else:
                span.set_attribute("outcome", "held")
            span.end()
        m = self.obs.metrics
        if m is None:
            return
        m.apply_duration.record(seconds, self.attrs)
        if error is not None:
            return
        for item in items:
            e = item.entry
            if item.state is not State.DONE or e is None:
                continue
            m.outcomes.add(1, {**self.attrs, "kind": e.kind, "outcome": item.outcome})
            m.persist_delay.record(_entry_age_s(item.entry_id), self.attrs)
            if e.kind == "event" and item.outcome == "applied":
                m.go_appends.add(1, {"storage": e.route})


class ObservedApply:
    """An apply step inside its spans, metrics and log binding."""

    def __init__(self, inner: ApplyStep, hooks: ShardHooks) -> None:
        self.inner = inner
        self.hooks = hooks

    async def apply(self, items: list[Item], check_lease: Callable[[], None]) -> None:
        """Apply ``items`` through the wrapped step."""
        spans = self.hooks.start_spans(items)
        start = time.perf_counter()
        error: BaseException | None = None
        try:
            with structlog.contextvars.bound_contextvars(
                shard=self.hooks.shard, worker=self.hooks.obs.worker_id
            ):
                await self.inner.apply(items, check_lease)
        except BaseException as exc:
            error = exc
            raise
        finally:
            self.hooks.finish(items, spans, time.perf_counter() - start, error)
