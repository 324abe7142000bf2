"""Process-wide telemetry of a worker process: the Prometheus endpoint and span export.

A worker run from the command line owns its process, so it may install the global
OpenTelemetry providers; a worker embedded in an application uses the application's providers
instead (``Worker(settings).run()`` with the providers already set).

- ``--metrics-port``: a :class:`~opentelemetry.sdk.metrics.MeterProvider` whose Prometheus
  reader is served as text on ``http://<host>:<port>/metrics`` (host 127.0.0.1 by default);
  implies ``enable_metrics``.
- ``--trace-file``: a :class:`~opentelemetry.sdk.trace.TracerProvider` writing each finished
  span as one JSON line to a file; implies ``enable_tracing``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from opentelemetry import metrics, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from sessionstreams.common.logs import get_logger
from sessionstreams.common.settings import Settings

log = get_logger("sessionstreams.worker")

SERVICE_NAME = "sessionstreams-worker"


class JsonLinesSpanExporter(SpanExporter):
    """Appends each span as one line of JSON (``ReadableSpan.to_json``) to a file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Write ``spans``; a write error fails the export (the SDK logs it)."""
        text = "".join(span.to_json(indent=None) + "\n" for span in spans)
        try:
            with self._lock, self.path.open("a", encoding="utf-8") as out:
                out.write(text)
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to release: the file is opened per export."""


@dataclass
class Telemetry:
    """What :func:`setup` installed, to be shut down when the worker exits."""

    settings: Settings
    closers: list[Callable[[], object]] = field(default_factory=list)

    def shutdown(self) -> None:
        """Flush spans and stop the metrics endpoint."""
        for close in reversed(self.closers):
            close()
        self.closers.clear()


def _resource() -> Resource:
    return Resource.create({"service.name": SERVICE_NAME})


def serve_metrics(host: str, port: int) -> Callable[[], object]:
    """Serve the global meter provider's metrics for Prometheus; returns the closer."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from prometheus_client import start_http_server

    provider = MeterProvider(metric_readers=[PrometheusMetricReader()], resource=_resource())
    metrics.set_meter_provider(provider)
    server, thread = start_http_server(port, addr=host)
    log.info("metrics endpoint", url=f"http://{host}:{server.server_port}/metrics")

    def close() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)
        provider.shutdown()

    return close


def trace_to_file(path: str) -> Callable[[], object]:
    """Export the spans of the global tracer provider to ``path`` (JSON lines)."""
    provider = TracerProvider(resource=_resource())
    provider.add_span_processor(BatchSpanProcessor(JsonLinesSpanExporter(path),
                                                   schedule_delay_millis=500))
    trace.set_tracer_provider(provider)
    log.info("spans exported", path=path)
    return provider.shutdown


def setup(
    settings: Settings,
    *,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
    trace_file: str | None = None,
) -> Telemetry:
    """Install the providers the options ask for; the returned settings enable what is on."""
    tel = Telemetry(settings)
    if metrics_port is not None:
        tel.closers.append(serve_metrics(metrics_host, metrics_port))
        tel.settings = tel.settings.replace(enable_metrics=True)
    if trace_file:
        tel.closers.append(trace_to_file(trace_file))
        tel.settings = tel.settings.replace(enable_tracing=True)
    elif settings.enable_tracing and isinstance(trace.get_tracer_provider(),
                                                trace.ProxyTracerProvider):
        log.warning("tracing is enabled but no tracer provider is set: spans are dropped "
                    "(use --trace-file, or run the worker with your provider installed)")
    return tel
