"""The OpenTelemetry SDK from otel.yaml: providers, sampler, exporters behind redaction.

Providers are built per container, never installed globally, so two containers in one
process (tests, `simulate --in-process`) keep their spans apart. Nothing here opens a
connection: exporters connect on their first export, from their own thread.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)

from pyloto_corp import __version__
from pyloto_corp.observability.instruments import SCOPE, Metrics, Telemetry
from pyloto_corp.observability.otel_config import OtelConfig, OtelConfigError
from pyloto_corp.observability.redaction import RedactingSpanExporter, SpanRedactor


@dataclass
class TelemetryRuntime:
    """The telemetry handed to the code, and the providers to flush at shutdown (None when
    nothing is exported: the code then records through the API's no-op implementations,
    which cost next to nothing on the hot path)."""

    telemetry: Telemetry
    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    stopped: bool = False

    def shutdown(self) -> None:
        """Export what is buffered and stop the exporters (once; later calls do nothing)."""
        if self.stopped:
            return
        self.stopped = True
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()


def sampler(config: OtelConfig) -> Sampler:
    """The configured sampler (OTEL_TRACES_SAMPLER names)."""
    ratio = TraceIdRatioBased(config.sampler_ratio)
    return {
        "always_on": ALWAYS_ON,
        "always_off": ALWAYS_OFF,
        "traceidratio": ratio,
        "parentbased_always_on": ParentBased(ALWAYS_ON),
        "parentbased_always_off": ParentBased(ALWAYS_OFF),
        "parentbased_traceidratio": ParentBased(ratio),
    }[config.sampler]


def resource(config: OtelConfig, environment: str, environ: Mapping[str, str]) -> Resource:
    """service.* and deployment.environment, plus GCP's attributes when detected."""
    base = Resource.create(
        {
            "service.name": config.service_name,
            "service.version": config.service_version or __version__,
            "deployment.environment": config.environment or environment,
        }
    )
    detect = config.resource_detection == "gcp" or (
        config.resource_detection == "auto" and bool(environ.get("K_SERVICE"))
    )
    if not detect:
        return base
    from opentelemetry.resourcedetector.gcp_resource_detector import (
        GoogleCloudResourceDetector,
    )

    # Asks the metadata server (on Cloud Run it answers at once); failures leave it out.
    detected = GoogleCloudResourceDetector(raise_on_error=False).detect()
    return detected.merge(base)


class JsonConsoleSpanExporter(ConsoleSpanExporter):
    """`console`: one JSON object a line (the SDK's default is indented, several lines)."""

    def __init__(self) -> None:
        super().__init__(out=sys.stdout, formatter=_span_line)


def _span_line(span: ReadableSpan) -> str:
    return json.dumps(json.loads(span.to_json()), ensure_ascii=False, sort_keys=True) + "\n"


def _metrics_line(data: MetricsData) -> str:
    """`console` metrics as one JSON object a line, like the spans (the SDK's is indented)."""
    return data.to_json(indent=None) + "\n"


def span_exporter(config: OtelConfig, project: str | None) -> SpanExporter | None:
    """The real exporter of `config.traces_exporter` (None for `none`)."""
    if config.traces_exporter == "console":
        return JsonConsoleSpanExporter()
    if config.traces_exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = config.otlp_endpoint
        return OTLPSpanExporter(endpoint=endpoint) if endpoint else OTLPSpanExporter()
    if config.traces_exporter == "cloud_trace":
        return cloud_trace_exporter(config, project)
    return None


def cloud_trace_exporter(config: OtelConfig, project: str | None) -> SpanExporter:
    """Cloud Trace's exporter; with `traces.cloud_trace.endpoint` it talks plain gRPC to a
    local Cloud Trace API (no credentials), else to Google with the default credentials."""
    from opentelemetry.exporter.cloud_trace import CloudTraceSpanExporter

    project = config.cloud_trace_project or project
    endpoint = config.cloud_trace_endpoint
    client = _local_trace_client(endpoint) if endpoint else None
    if client is not None and not project:
        raise OtelConfigError(
            f"{config.source}: traces.cloud_trace.endpoint needs a project "
            "(traces.cloud_trace.project_id or GCP_PROJECT)"
        )
    with warnings.catch_warnings():
        # Google marks this exporter deprecated in favour of OTLP to telemetry.googleapis.com;
        # it is still the documented Cloud Trace path and the one Cloud Run's docs use.
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return CloudTraceSpanExporter(project_id=project, client=client)  # type: ignore[no-untyped-call]
        except Exception as error:  # google.auth's DefaultCredentialsError and kin
            raise OtelConfigError(
                f"{config.source}: traces.exporter cloud_trace: {type(error).__name__}: {error}"
            ) from None


def _local_trace_client(endpoint: str) -> Any:
    import grpc
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.trace_v2 import TraceServiceClient
    from google.cloud.trace_v2.services.trace_service.transports import (
        TraceServiceGrpcTransport,
    )

    channel = grpc.insecure_channel(endpoint, options=[("grpc.use_local_subchannel_pool", 1)])
    transport = TraceServiceGrpcTransport(
        channel=channel,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
    )
    return TraceServiceClient(transport=transport)


def metric_exporter(config: OtelConfig, project: str | None) -> MetricExporter | None:
    """The real exporter of `config.metrics_exporter` (None for `none`)."""
    if config.metrics_exporter == "console":
        return ConsoleMetricExporter(out=sys.stdout, formatter=_metrics_line)
    if config.metrics_exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter()
    if config.metrics_exporter == "cloud_monitoring":
        from opentelemetry.exporter.cloud_monitoring import CloudMonitoringMetricsExporter

        try:
            with warnings.catch_warnings():
                # Deprecated like the Cloud Trace exporter, and still Cloud Run's documented path.
                warnings.simplefilter("ignore", DeprecationWarning)
                return CloudMonitoringMetricsExporter(project_id=project)
        except Exception as error:  # google.auth's DefaultCredentialsError and kin
            raise OtelConfigError(
                f"{config.source}: metrics.exporter cloud_monitoring: "
                f"{type(error).__name__}: {error}"
            ) from None
    return None


def build_telemetry(
    config: OtelConfig,
    *,
    hash_key: str,
    environment: str = "development",
    project: str | None = None,
    environ: Mapping[str, str] | None = None,
    span_exporter_override: SpanExporter | None = None,
    metric_reader: MetricReader | None = None,
) -> TelemetryRuntime:
    """Providers for `config`; `span_exporter_override` and `metric_reader` replace the
    configured exporters (tests pass in-memory ones; redaction still applies)."""
    environ = os.environ if environ is None else environ
    exporter = span_exporter_override or span_exporter(config, project)
    readers: list[MetricReader] = []
    if metric_reader is not None:
        readers.append(metric_reader)
    else:
        real = metric_exporter(config, project)
        if real is not None:
            interval = config.metrics_interval_seconds * 1000
            readers.append(PeriodicExportingMetricReader(real, export_interval_millis=interval))
    if exporter is None and not readers:
        return TelemetryRuntime(Telemetry())  # exporting nothing: record nothing
    res = resource(config, environment, environ)
    runtime = TelemetryRuntime(Telemetry())
    if exporter is not None:
        tracer_provider = TracerProvider(resource=res, sampler=sampler(config))
        redactor = SpanRedactor(config.redaction, hash_key)
        tracer_provider.add_span_processor(
            BatchSpanProcessor(RedactingSpanExporter(exporter, redactor))
        )
        runtime.tracer_provider = tracer_provider
        runtime.telemetry.tracer = tracer_provider.get_tracer(SCOPE, __version__)
    if readers:
        meter_provider = MeterProvider(resource=res, metric_readers=readers)
        runtime.meter_provider = meter_provider
        runtime.telemetry.metrics = Metrics(meter_provider.get_meter(SCOPE, __version__))
    return runtime
