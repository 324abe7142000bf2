"""OpenTelemetry for tests: in-memory span exporter and metric reader as global providers.

Fixtures (re-exported by conftest.py):

- ``span_exporter``: a global TracerProvider exporting every finished span at once to an
  ``InMemorySpanExporter``;
- ``metric_reader``: a global MeterProvider read by an ``InMemoryMetricReader``.

:func:`reset_telemetry` (run after every test by conftest's autouse fixture) puts the global
providers back to "unset", so a test's providers never leak into the next one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.metrics import _internal as metrics_internal
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

_providers: list[Any] = []


def reset_telemetry() -> None:
    """Shut down the providers a test installed; the globals become unset again."""
    while _providers:
        _providers.pop().shutdown()
    trace._TRACER_PROVIDER = None
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    metrics_internal._METER_PROVIDER = None
    metrics_internal._METER_PROVIDER_SET_ONCE = Once()
    # The proxy handed out before a provider was set keeps pointing at it: start afresh.
    metrics_internal._PROXY_METER_PROVIDER = metrics_internal._ProxyMeterProvider()


@pytest.fixture
def span_exporter() -> Iterator[InMemorySpanExporter]:
    """Every span finished during the test, via a global TracerProvider."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _providers.append(provider)
    yield exporter
    reset_telemetry()


@pytest.fixture
def metric_reader() -> Iterator[InMemoryMetricReader]:
    """Metrics recorded during the test, via a global MeterProvider."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    metrics.set_meter_provider(provider)
    _providers.append(provider)
    yield reader
    reset_telemetry()


def points(reader: InMemoryMetricReader, name: str) -> list[tuple[dict[str, Any], Any]]:
    """(attributes, data point) of every point of metric ``name`` collected now."""
    data = reader.get_metrics_data()
    out: list[tuple[dict[str, Any], Any]] = []
    for rm in data.resource_metrics if data is not None else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    out.extend((dict(p.attributes or {}), p) for p in metric.data.data_points)
    return out


def total(reader: InMemoryMetricReader, name: str, **attrs: Any) -> float:
    """Sum of a counter's values (a histogram's counts) over points matching ``attrs``."""
    value = 0.0
    for point_attrs, point in points(reader, name):
        if all(point_attrs.get(k) == v for k, v in attrs.items()):
            value += point.count if hasattr(point, "bucket_counts") else point.value
    return value


def read_span_lines(path: Path) -> list[dict[str, Any]]:
    """Spans a worker wrote with ``--trace-file`` (one JSON object a line)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
