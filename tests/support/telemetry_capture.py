"""Telemetry built by the production code from the repository's otel.yaml, exporting into
memory behind the same redacting wrapper production uses: what a test reads is what Cloud
Trace and Cloud Monitoring would receive."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pyloto_corp.observability.otel_config import load_otel_config
from pyloto_corp.observability.setup import TelemetryRuntime, build_telemetry
from tests.support.helpers import REPO

# The privacy hash key of the captured telemetry; the app under test is given the same one.
HASH_KEY = "captured-telemetry-hash-key"


class Captured:
    """Spans and metrics a container exported."""

    def __init__(self, hash_key: str) -> None:
        self.config = load_otel_config(REPO / "otel.yaml")
        self.spans_out = InMemorySpanExporter()
        self.metrics_out = InMemoryMetricReader()
        self.runtime: TelemetryRuntime = build_telemetry(
            self.config,
            hash_key=hash_key,
            environ={},
            span_exporter_override=self.spans_out,
            metric_reader=self.metrics_out,
        )

    def spans(self) -> list[ReadableSpan]:
        """Every span exported so far (the batch processor flushed first)."""
        assert self.runtime.tracer_provider is not None
        self.runtime.tracer_provider.force_flush()
        return list(self.spans_out.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        """The exported spans called `name`, in start order."""
        found = [span for span in self.spans() if span.name == name]
        return sorted(found, key=lambda span: span.start_time or 0)

    def metric_points(self, name: str) -> list[Any]:
        """The data points of metric `name`."""
        data = self.metrics_out.get_metrics_data()
        if data is None:
            return []
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]

    def points(self, metric: str) -> dict[tuple[tuple[str, Any], ...], Any]:
        """Data point values of `metric` by their sorted attributes."""
        return {
            tuple(sorted((point.attributes or {}).items())): getattr(point, "value", None)
            for point in self.metric_points(metric)
        }
