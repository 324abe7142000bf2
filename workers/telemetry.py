"""Process-wide telemetry of a worker process: the Prometheus endpoint and span export.

A worker run from the command line owns its process, so it may install the global
OpenTelemetry providers; a worker embedded in an application uses the application's providers
instead (``Worker(settings).run()`` with the providers already set).

- ``--metrics-port``: a :class:`~opentelemetry.sdk.metrics.MeterProvider` whose Prometheus
  reader is served as text on ``http://<host>:<port>/metrics`` (host 127.0.0.1 by default);
  implies ``enable_metrics``.
- ``--trace-file``: a :class:`~opentelemetry.sdk.trace.TracerProvider` writing each finished
  span as one JSON line to a file; implies ``enable_tracing``.

Both need the OpenTelemetry SDK (and the first the Prometheus exporter), which only the
``worker`` extra installs: ``pip install 'sessionstreams[worker]'``. Without them a worker runs
as long as neither option is given, and :func:`setup` says what to install when one is.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics, trace

from sessionstreams.common.errors import ConfigError
from sessionstreams.common.logs import get_logger
from sessionstreams.common.settings import Settings

log = get_logger("sessionstreams.worker")

SERVICE_NAME = "sessionstreams-worker"

#: How to install what ``--metrics-port`` and ``--trace-file`` need.
WORKER_EXTRA = "pip install 'sessionstreams[worker]'"

#: The modules each option needs, with the distribution that provides each.
_NEEDS: dict[str, dict[str, str]] = {
    "--metrics-port": {
        "opentelemetry.sdk": "opentelemetry-sdk",
        "opentelemetry.exporter.prometheus": "opentelemetry-exporter-prometheus",
        "prometheus_client": "prometheus-client",
    },
    "--trace-file": {"opentelemetry.sdk": "opentelemetry-sdk"},
}


def require_extra(option: str) -> None:
    """Check that what ``option`` needs is installed.

    Raises:
        ConfigError: naming the missing distributions and the pip command that adds them.
    """
    missing = []
    for module, distribution in _NEEDS[option].items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(distribution)
    if missing:
        raise ConfigError(f"{option} needs {' and '.join(missing)} (not installed): "
                          f"{WORKER_EXTRA}")


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


def _resource() -> Any:
    from opentelemetry.sdk.resources import Resource

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
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from sessionstreams.workers._span_file import JsonLinesSpanExporter

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
    """Install the providers the options ask for; the returned settings enable what is on.

    Raises:
        ConfigError: an option needs the ``worker`` extra, which is not installed.
    """
    if metrics_port is not None:
        require_extra("--metrics-port")
    if trace_file:
        require_extra("--trace-file")
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
