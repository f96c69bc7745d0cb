"""What the code records: spans and metrics, on the OpenTelemetry API only.

The use cases and adapters receive one `Telemetry`; bootstrap builds it on the SDK from
otel.yaml (observability/setup.py), tests build it on in-memory exporters, and without
either it is a no-op. Span attributes are few and never hold message text: the exporter's
allow-list drops anything else, and identities are hashed on the way out.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

_PROPAGATOR = TraceContextTextMapPropagator()
SCOPE = "pyloto_corp"

# Webhook latency buckets (ms): dense under the 5 s alert, for p50/p95/p99 from a histogram.
LATENCY_BUCKETS_MS = (1, 2, 5, 10, 20, 30, 50, 75, 100, 250, 500, 1000, 2500, 5000, 10000)


def context_of(traceparent: str | None) -> otel_context.Context | None:
    """The context a `traceparent` value continues, or None if it is absent or malformed."""
    if not traceparent:
        return None
    extracted = _PROPAGATOR.extract({"traceparent": traceparent})
    span_context = trace.get_current_span(extracted).get_span_context()
    return extracted if span_context.is_valid else None


def traceparent_of(span: Span) -> str | None:
    """The `traceparent` value that makes later work a child of `span`."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, trace.set_span_in_context(span))
    return carrier.get("traceparent")


class Metrics:
    """The instruments behind the deploy guide's dashboard and alerts."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.webhook_duration = meter.create_histogram(
            "pyloto.webhook.duration",
            unit="ms",
            description="Webhook POST handling time, by HTTP status.",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_MS,
        )
        self.step_duration = meter.create_histogram(
            "pyloto.step.duration",
            unit="ms",
            description="Time of one step, by state and outcome.",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_MS,
        )
        self.llm_calls = meter.create_counter(
            "pyloto.llm.calls", description="LLM calls, by step and outcome (ok or a reason)."
        )
        self.llm_tokens = meter.create_counter(
            "pyloto.llm.tokens",
            unit="{token}",
            description="LLM tokens the provider counted, failed calls included, by step "
            "(pyloto.llm.step) and kind (pyloto.llm.token_kind: input or output).",
        )
        self.billable_messages = meter.create_counter(
            "pyloto.whatsapp.billable",
            unit="{message}",
            description="Messages sent that Meta's status webhooks call billable, once per "
            "outbound message, by pricing category (pyloto.whatsapp.pricing_category).",
        )
        self.fallbacks = meter.create_counter(
            "pyloto.fallbacks", description="Messages answered by template, by reason."
        )
        self.webhook_rejections = meter.create_counter(
            "pyloto.webhook.rejected",
            description="Webhook requests refused (signature, body, size, verification, "
            "store or queue unavailable, store not durable), by reason.",
        )
        self.ops_signin_refusals = meter.create_counter(
            "pyloto.ops.signin.refused", description="Console sign-ins refused, by reason."
        )
        self.slow_clients_closed = meter.create_counter(
            "pyloto.http.slow_clients.closed",
            description="Connections closed because their request did not arrive within "
            "REQUEST_READ_TIMEOUT_SECONDS.",
        )
        self.dedupe_hits = meter.create_counter(
            "pyloto.dedupe.hits", description="Inbound messages already stored (redeliveries)."
        )
        self.messages = meter.create_counter(
            "pyloto.messages.received", description="New inbound messages stored."
        )
        self.send_errors = meter.create_counter(
            "pyloto.send.errors", description="Graph API errors on sends, by error code."
        )
        self.handoff_notices = meter.create_counter(
            "pyloto.handoff.notices",
            description="Deliveries of mode-change notices to HANDOFF_WEBHOOK_URL, by outcome "
            "(sent, retried, rejected, gave_up, unconfigured).",
        )
        self.store_data_lost = meter.create_counter(
            "pyloto.store.data_lost",
            description="Times the shared store was found to have lost writes (a Redis that "
            "restarted without its data).",
        )


@dataclass
class Telemetry:
    """A tracer and the metrics; `Telemetry()` records nothing."""

    tracer: trace.Tracer = field(default_factory=trace.NoOpTracer)
    metrics: Metrics = field(
        default_factory=lambda: Metrics(metrics.NoOpMeterProvider().get_meter(SCOPE))
    )

    @property
    def tracing(self) -> bool:
        """Whether spans are recorded: without a provider, per-request span work is skipped."""
        return not isinstance(self.tracer, trace.NoOpTracer)

    @contextmanager
    def span(
        self,
        name: str,
        *,
        kind: SpanKind = SpanKind.INTERNAL,
        parent: otel_context.Context | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] = (),
    ) -> Iterator[Span]:
        """A current span; an exception marks it failed with its type only (its message may
        quote the customer, and must not leave the process)."""
        with self.tracer.start_as_current_span(
            name,
            context=parent,
            kind=kind,
            attributes=attributes,
            links=links,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except Exception as error:
                status = getattr(span, "status", None)  # the SDK's span; the API has none
                if status is None or status.is_unset:  # not already failed with a reason
                    mark_failed(span, type(error).__name__)
                raise

    def start_span(
        self,
        name: str,
        *,
        parent: otel_context.Context | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] = (),
    ) -> Span:
        """A span the caller ends (for work that outlives one `with` block)."""
        return self.tracer.start_span(name, context=parent, attributes=attributes, links=links)


def mark_failed(span: Span, error_type: str) -> None:
    """Record a failure on `span` by its type (`error.type`), never by its message."""
    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, error_type))


NEW_TRACE = otel_context.Context()  # parent of a span that must start its own trace
