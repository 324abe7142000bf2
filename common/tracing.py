"""Tracing, metrics and log binding of the session API, as decorators around its methods.

``@operation("get_session", span=True, ...)`` on a :class:`~producer.SessionService` method
wraps every call:

- log binding, always: the call's session (its first argument) is bound for log lines
  (:func:`sessionstreams.common.logs.bind_call`; one context-variable set);
- a span, with ``Settings.enable_tracing`` (reference §9.1): tracer ``trpc.agent.go``, the Go
  span name, ``app_name`` / ``user_id`` / ``session_id`` (even when empty) and ``storage``
  where Go sets it;
- metrics, with ``Settings.metrics_enabled`` (``enable_metrics``, or ``enable_tracing`` when
  unset as in Go): meter ``trpc_agent_go.session.redis`` with the Go counters (§9.2) and our
  latency histogram ``sessionstreams.operation.duration`` (seconds, by operation and outcome
  ``ok`` / ``error``; its count is the number of calls).

With tracing and metrics off a call costs one context-variable set and reset more. A call
the service makes to itself during an operation (and a call from one of its hooks) is part of
the outer operation: no span or count of its own.

Across the stream: the producer stores :func:`current_traceparent` in the stream entry and the
worker continues the trace with :func:`context_from_traceparent`.

A method added later (the summaries feature) gets all of it in one line, e.g.
``@operation("create_session_summary", span=True, count="before", storage=session_storage)``.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, ParamSpec, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from sessionstreams.common.logs import bind_call, unbind_call

TRACER_NAME = "trpc.agent.go"
METER_NAME = "trpc_agent_go.session.redis"
#: Prefix of the trpc-agent-go counters (reference §9.2).
GO_COUNTER_PREFIX = "trpc_agent_go.session.redis."
#: Histogram buckets in seconds: sub-millisecond Redis calls up to stalled ones.
DURATION_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                      2.5, 5.0, 10.0)
HASHIDX = "hashidx"
STORAGE_TYPE = "storage_type"  # Session.service_meta key (sessionstreams.common.readpath)

P = ParamSpec("P")
R = TypeVar("R")
Count = Literal["before", "after"] | None

_propagator = TraceContextTextMapPropagator()
#: The span of the session-API call in progress (only set while tracing is enabled).
_op_span: ContextVar[Span | None] = ContextVar("sessionstreams_op_span", default=None)
#: The instruments of the session-API call in progress: a call the service makes to itself
#: (create_session looking the id up with get_session) is part of the outer operation.
_active: ContextVar[Instruments | None] = ContextVar("sessionstreams_active", default=None)


# -- attributes -----------------------------------------------------------------------------


def key_attributes(subject: object) -> dict[str, str]:
    """``app_name`` / ``user_id`` / ``session_id`` of a Key, Session, UserKey or stream entry;
    empty strings for what the subject does not have (Go sets all three, even empty)."""
    def first(*names: str) -> str:
        for name in names:
            value = getattr(subject, name, None)
            if isinstance(value, str):
                return value
        return ""

    return {
        "app_name": subject if isinstance(subject, str) else first("app_name", "app"),
        "user_id": first("user_id", "user"),
        "session_id": first("session_id", "sid", "id"),
    }


def session_storage(session: Any) -> str:
    """The storage tag of a Session (``hashidx`` when untagged)."""
    meta = getattr(session, "service_meta", None) or {}
    return str(meta.get(STORAGE_TYPE) or HASHIDX)


def storage_of_result(subject: Any, result: Any) -> str | None:
    """``storage`` from the returned Session (None when nothing was returned)."""
    return None if result is None else session_storage(result)


def storage_of_subject(subject: Any, result: Any) -> str | None:
    """``storage`` from the Session the call was given."""
    return session_storage(subject)


def annotate(**attributes: Any) -> None:
    """Add attributes to the span of the session-API call in progress (no-op without one)."""
    span = _op_span.get()
    if span is not None:
        span.set_attributes(attributes)


# -- trace context across the stream ---------------------------------------------------------


def current_traceparent() -> str:
    """The W3C ``traceparent`` of the current span; "" when there is no valid span."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent", "")


def context_from_traceparent(traceparent: str) -> Context | None:
    """The context to continue a trace from a stored ``traceparent`` (None when empty)."""
    if not traceparent:
        return None
    return _propagator.extract({"traceparent": traceparent})


def tracer() -> trace.Tracer:
    """The tracer of the global provider, named ``trpc.agent.go`` as in Go."""
    return trace.get_tracer(TRACER_NAME)


def meter() -> metrics.Meter:
    """The meter of the global provider, named ``trpc_agent_go.session.redis`` as in Go."""
    return metrics.get_meter(METER_NAME)


def duration_histogram(m: metrics.Meter, name: str, description: str) -> metrics.Histogram:
    """A latency histogram in seconds with :data:`DURATION_BUCKETS_S`."""
    return m.create_histogram(name, unit="s", description=description,
                              explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS_S))


# -- the decorator ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Operation:
    """How one API method is observed.

    Attributes:
        name: span and ``operation`` attribute name.
        span: create a span (the Go span names only).
        count: record the Go counter ``<name>_count`` before the call or after it succeeded.
        storage: gives the ``storage`` attribute from (first argument, result); None = none.
        synchronous_only: the Go counter counts a persisted write: skip it in async mode
            (the worker counts the write when it applies it).
    """

    name: str
    span: bool = False
    count: Count = None
    storage: Callable[[Any, Any], str | None] | None = None
    synchronous_only: bool = False
    attributes: Mapping[str, Mapping[str, str]] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "attributes", {  # metric attributes, built once
            outcome: MappingProxyType({"operation": self.name, "outcome": outcome})
            for outcome in ("ok", "error")})


class Instruments:
    """The tracer and instruments of one service (built only when tracing or metrics are on)."""

    def __init__(self, *, tracing: bool, metrics_on: bool, async_persist: bool) -> None:
        self.tracer = tracer() if tracing else None
        self.metrics_on = metrics_on
        self.async_persist = async_persist
        m = meter()
        self._go_counters: dict[str, metrics.Counter] = {}
        self._meter = m
        # One histogram gives the latencies and, as its count, the calls per operation and
        # outcome: one record per call.
        self.duration = duration_histogram(
            m, "sessionstreams.operation.duration",
            "Session API call latency, by operation and outcome (ok, error)")

    def go_count(self, name: str, storage: str | None) -> None:
        """Add 1 to the Go counter ``trpc_agent_go.session.redis.<name>_count``."""
        counter = self._go_counters.get(name)
        if counter is None:
            counter = self._go_counters[name] = self._meter.create_counter(
                f"{GO_COUNTER_PREFIX}{name}_count", unit="1")
        counter.add(1, {"storage": storage or HASHIDX})

    async def run(self, op: Operation, call: Callable[[], Awaitable[Any]], subject: Any) -> Any:
        """Run ``call`` inside the operation's span (made current), recording its metrics.

        The span is handled by hand rather than with ``start_as_current_span``, whose
        generator-based context managers cost as much again as the span itself; metrics are
        recorded once the span is no longer current, which spares the SDK's exemplar
        sampling (it would triple their cost).
        """
        counting = self.metrics_on and op.count is not None and not (
            op.synchronous_only and self.async_persist)
        if counting and op.count == "before":
            self.go_count(op.name, op.storage(subject, None) if op.storage else None)
        span = None
        if self.tracer is not None and op.span:
            span = self.tracer.start_span(op.name, attributes=key_attributes(subject))
            attached = otel_context.attach(trace.set_span_in_context(span))
            current = _op_span.set(span)
        start = time.perf_counter()
        outcome = "error"
        count_after = False
        storage = None
        try:
            result = await call()
            storage = op.storage(subject, result) if op.storage else None
            if span is not None and storage is not None:
                span.set_attribute("storage", storage)
            count_after = counting and op.count == "after" and (
                storage is not None or op.storage is None)
            outcome = "ok"
            return result
        except BaseException as exc:
            if span is not None:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            elapsed = time.perf_counter() - start
            if span is not None:
                _op_span.reset(current)
                otel_context.detach(attached)
                span.end()
            if self.metrics_on:
                self.duration.record(elapsed, op.attributes[outcome])
                if count_after:
                    self.go_count(op.name, storage)


def instruments_for(settings: Any) -> Instruments | None:
    """The instruments a service with ``settings`` needs; None when tracing and metrics are
    off (the decorators then only bind the log fields)."""
    if not (settings.enable_tracing or settings.metrics_enabled):
        return None
    return Instruments(tracing=settings.enable_tracing, metrics_on=settings.metrics_enabled,
                       async_persist=settings.enable_async_persist)


def operation(
    name: str,
    *,
    span: bool = False,
    count: Count = None,
    storage: Callable[[Any, Any], str | None] | None = None,
    synchronous_only: bool = False,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Observe an async method of an object with an ``_instruments`` attribute
    (:func:`instruments_for`); its first argument after ``self`` names the session.

    See :class:`Operation` for the arguments.
    """
    op = Operation(name, span, count, storage, synchronous_only)

    def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        # The name of the argument after ``self``, for a call that passes it by keyword.
        first = list(inspect.signature(fn).parameters)[1]

        @functools.wraps(fn)
        async def observed(*args: P.args, **kwargs: P.kwargs) -> R:
            subject = args[1] if len(args) > 1 else kwargs.get(first)
            token = bind_call(subject)
            try:
                instruments: Instruments | None = args[0]._instruments  # type: ignore[attr-defined]
                if instruments is None or _active.get() is instruments:
                    return await fn(*args, **kwargs)
                active = _active.set(instruments)
                try:
                    result: R = await instruments.run(op, lambda: fn(*args, **kwargs), subject)
                finally:
                    _active.reset(active)
                return result
            finally:
                unbind_call(token)

        return observed

    return decorate


def traced_attributes(subject: object, **extra: Any) -> Mapping[str, Any]:
    """Span attributes of a session plus ``extra`` (for spans outside the decorator)."""
    return {**key_attributes(subject), **extra}
