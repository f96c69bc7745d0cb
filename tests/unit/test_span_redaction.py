"""Spans leave the process redacted: the allow-list, keyed hashes, personal data replaced.

Spans are made by the real SDK: a TracerProvider whose processors hand each ended span both
to a plain in-memory exporter (what the code recorded) and to one behind the
RedactingSpanExporter (what would leave the process), so each redacted copy is compared
with its original.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from pyloto_corp.observability.otel_config import Redaction, attribute_allowed, load_otel_config
from pyloto_corp.observability.redaction import RedactingSpanExporter, SpanRedactor, keyed_hash
from tests.support.helpers import CNPJ, CPF, EMAIL, PHONE, REPO

KEY = "span-redaction-test-key"

WA_ID = "5511987654321"
CUSTOMER_CODE = "CLI-204981"  # matched only by the configured extra pattern
LEAKS = [PHONE, WA_ID, "91234-5678", EMAIL, CPF, "12345678909", CNPJ, CUSTOMER_CODE]
PII_TEXT = f"tel {PHONE}, wa {WA_ID}, email {EMAIL}, cpf {CPF}, cnpj {CNPJ}, cód {CUSTOMER_CODE}"
REDACTED_TEXT = "tel [phone], wa [phone], email [email], cpf [cpf], cnpj [cnpj], cód [redacted]"


def rules() -> Redaction:
    """The shipped otel.yaml's rules, plus one extra pattern (an internal customer code)."""
    shipped = load_otel_config(REPO / "otel.yaml").redaction
    return replace(shipped, extra_patterns=(re.compile(r"CLI-[0-9]{6}"),))


@dataclass
class Pipeline:
    """A tracer whose spans end up both as recorded and as exported."""

    provider: TracerProvider
    recorded: InMemorySpanExporter
    exported: InMemorySpanExporter

    @property
    def tracer(self) -> trace.Tracer:
        """A tracer of the provider."""
        return self.provider.get_tracer("pyloto_corp.tests")

    def pairs(self) -> list[tuple[ReadableSpan, ReadableSpan]]:
        """(recorded, exported) for every ended span, in end order."""
        recorded = list(self.recorded.get_finished_spans())
        exported = list(self.exported.get_finished_spans())
        assert len(recorded) == len(exported)
        return list(zip(recorded, exported, strict=True))

    def only(self) -> ReadableSpan:
        """The single exported span."""
        (span,) = self.exported.get_finished_spans()
        return span


def build(resource: Resource | None = None, key: str = KEY) -> Pipeline:
    """A TracerProvider with a plain and a redacting in-memory exporter."""
    provider = TracerProvider(resource=resource or Resource.create({"service.name": "pyloto"}))
    recorded, exported = InMemorySpanExporter(), InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(recorded))
    redacting = RedactingSpanExporter(exported, SpanRedactor(rules(), key))
    provider.add_span_processor(SimpleSpanProcessor(redacting))
    return Pipeline(provider, recorded, exported)


@pytest.fixture
def pipeline() -> Iterator[Pipeline]:
    """The default pipeline, shut down after the test."""
    built = build()
    yield built
    built.provider.shutdown()


def attributes_of(item: ReadableSpan | Event | Link) -> dict[str, Any]:
    """The attributes of a span, event or link as a plain dict."""
    return dict(item.attributes or {})


def assert_clean(text: str) -> None:
    """No personal datum (or the customer code) appears in `text`."""
    for leak in LEAKS:
        assert leak not in text, leak


def test_attributes_outside_the_allow_list_are_dropped(pipeline: Pipeline) -> None:
    """Only keys on the allow-list leave; the others are dropped whatever their value."""
    attributes = {
        "pyloto.state.from": "deduped",
        "http.route": "/webhook",
        "gen_ai.request.model": "gpt-4o-mini",
        "messaging.message.body": "Olá, quero saber o preço",
        "http.request.header.authorization": "Bearer secret",
        "customer.name": "Maria Aparecida",
        "pyloto": "no star match without the dot",
    }
    with pipeline.tracer.start_as_current_span("step deduped", attributes=attributes):
        pass
    assert attributes_of(pipeline.only()) == {
        "pyloto.state.from": "deduped",
        "http.route": "/webhook",
        "gen_ai.request.model": "gpt-4o-mini",
    }


def test_the_customer_id_leaves_as_a_keyed_hash(pipeline: Pipeline) -> None:
    """`enduser.id` is exported as keyed_hash(value, key): the same customer gives the same
    hash in every span, another customer another, and the number itself is in none."""
    for sender in (WA_ID, WA_ID, "5521998765432"):
        with pipeline.tracer.start_as_current_span("message received") as span:
            span.set_attribute("enduser.id", sender)
    first, second, other = (attributes_of(s) for s in pipeline.exported.get_finished_spans())
    assert first["enduser.id"] == keyed_hash(WA_ID, KEY)
    assert second["enduser.id"] == first["enduser.id"]
    assert other["enduser.id"] == keyed_hash("5521998765432", KEY)
    assert other["enduser.id"] != first["enduser.id"]
    for exported in pipeline.exported.get_finished_spans():
        assert WA_ID not in exported.to_json()


def test_another_key_gives_another_hash() -> None:
    """The hash depends on the key: without PRIVACY_HASH_KEY nobody can recompute it from
    a phone number; the hash is not the number's plain digest either."""
    hashes: list[str] = []
    for key in (KEY, "another-key"):
        built = build(key=key)
        with built.tracer.start_as_current_span("step received") as span:
            span.set_attribute("enduser.id", WA_ID)
        hashes.append(attributes_of(built.only())["enduser.id"])
        built.provider.shutdown()
    assert hashes == [keyed_hash(WA_ID, KEY), keyed_hash(WA_ID, "another-key")]
    assert hashes[0] != hashes[1]
    assert all(value.startswith("h:") and WA_ID not in value for value in hashes)


def test_keyed_hash_is_stable_and_short() -> None:
    """keyed_hash is deterministic for (value, key) and differs when either changes."""
    assert keyed_hash(WA_ID, KEY) == keyed_hash(WA_ID, KEY)
    assert keyed_hash(WA_ID, KEY) != keyed_hash("5511987654320", KEY)
    assert keyed_hash(WA_ID, KEY) != keyed_hash(WA_ID, KEY + "x")
    assert re.fullmatch(r"h:[0-9a-f]{20}", keyed_hash(WA_ID, KEY))


def test_a_hashed_attribute_that_is_not_text_is_hashed_too(pipeline: Pipeline) -> None:
    """A customer id set as a number is hashed like its text."""
    with pipeline.tracer.start_as_current_span("step received") as span:
        span.set_attribute("enduser.id", int(WA_ID))
    assert attributes_of(pipeline.only())["enduser.id"] == keyed_hash(WA_ID, KEY)


def test_personal_data_is_replaced_in_the_name_and_allowed_values(pipeline: Pipeline) -> None:
    """Phone numbers, WhatsApp ids, e-mails, CPF, CNPJ and the extra pattern are replaced in
    the span name and in allowed attribute values, strings and sequences of strings alike."""
    with pipeline.tracer.start_as_current_span(f"send to {WA_ID}") as span:
        span.set_attribute("pyloto.note", PII_TEXT)
        span.set_attribute("pyloto.recipients", [WA_ID, EMAIL, "loja"])
        span.set_attribute("error.type", f"rejected {PHONE}")
    exported = pipeline.only()
    attributes = attributes_of(exported)
    assert exported.name == "send to [phone]"
    assert attributes["pyloto.note"] == REDACTED_TEXT
    assert tuple(attributes["pyloto.recipients"]) == ("[phone]", "[email]", "loja")
    assert attributes["error.type"] == "rejected [phone]"
    assert_clean(exported.to_json())


def test_events_are_redacted_and_filtered_like_the_span(pipeline: Pipeline) -> None:
    """An event's name and its allowed attribute values are redacted; its attributes outside
    the allow-list are dropped; its timestamp is kept."""
    with pipeline.tracer.start_as_current_span("step llm1") as span:
        span.add_event(
            f"retry for {EMAIL}",
            {"pyloto.reason": f"cpf {CPF}", "pyloto.count": 2, "customer.text": PII_TEXT},
        )
    recorded, exported = pipeline.pairs()[0]
    (event,) = exported.events
    assert event.name == "retry for [email]"
    assert attributes_of(event) == {"pyloto.reason": "cpf [cpf]", "pyloto.count": 2}
    assert event.timestamp == recorded.events[0].timestamp
    assert_clean(exported.to_json())


def test_links_keep_their_context_with_redacted_attributes(pipeline: Pipeline) -> None:
    """A link points at the same span; its attributes go through the allow-list and the
    redaction."""
    with pipeline.tracer.start_as_current_span("POST /webhook") as webhook:
        linked = webhook.get_span_context()
    link = Link(linked, {"pyloto.batch": f"de {PHONE}", "customer.email": EMAIL})
    with pipeline.tracer.start_as_current_span("message received", links=[link]):
        pass
    exported = list(pipeline.exported.get_finished_spans())[-1]
    (out,) = exported.links
    assert out.context == linked
    assert attributes_of(out) == {"pyloto.batch": "de [phone]"}
    assert_clean(exported.to_json())


def test_the_status_description_is_redacted(pipeline: Pipeline) -> None:
    """An error status keeps its code; its description loses the personal data."""
    with pipeline.tracer.start_as_current_span("whatsapp send") as span:
        span.set_status(Status(StatusCode.ERROR, f"undeliverable to {WA_ID} ({CNPJ})"))
    status = pipeline.only().status
    assert status.status_code is StatusCode.ERROR
    assert status.description == "undeliverable to [phone] ([cnpj])"


def test_an_unset_status_stays_unset(pipeline: Pipeline) -> None:
    """A span without a status is exported with none (no description invented)."""
    with pipeline.tracer.start_as_current_span("step received"):
        pass
    status = pipeline.only().status
    assert status.status_code is StatusCode.UNSET
    assert status.description is None


def test_resource_attributes_are_filtered_and_redacted() -> None:
    """The resource goes through the same rules: allowed keys with redacted values, others
    dropped, the schema URL kept."""
    resource = Resource.create(
        {
            "service.name": "pyloto",
            "host.name": f"laptop de {EMAIL}",
            "deployment.environment": "development",
            "owner.phone": PHONE,
        },
        schema_url="https://opentelemetry.io/schemas/1.21.0",
    )
    built = build(resource)
    with built.tracer.start_as_current_span("step received"):
        pass
    exported = built.only().resource
    built.provider.shutdown()
    attributes = dict(exported.attributes)
    assert attributes["service.name"] == "pyloto"
    assert attributes["host.name"] == "laptop de [email]"
    assert attributes["deployment.environment"] == "development"
    assert "owner.phone" not in attributes
    allowed = rules().allowed_attributes
    assert all(attribute_allowed(key, allowed) for key in attributes)
    assert exported.schema_url == "https://opentelemetry.io/schemas/1.21.0"


def test_values_that_are_not_text_are_kept(pipeline: Pipeline) -> None:
    """Numbers, booleans and sequences of them leave unchanged: token counts and durations
    stay usable (only an integer that reads as a phone number is replaced, see below)."""
    values: dict[str, int | float | bool | list[int] | list[float]] = {
        "pyloto.attempt": 3,
        "pyloto.step.duration_ms": 12.5,
        "pyloto.retry": True,
        "pyloto.sizes": [1, 2, 3],
        "gen_ai.usage.input_tokens": 120,
        "pyloto.ratios": [0.5, 0.25],
    }
    with pipeline.tracer.start_as_current_span("step llm2", attributes=values):
        pass
    attributes = attributes_of(pipeline.only())
    assert attributes["pyloto.attempt"] == 3
    assert attributes["pyloto.step.duration_ms"] == 12.5
    assert attributes["pyloto.retry"] is True
    assert tuple(attributes["pyloto.sizes"]) == (1, 2, 3)
    assert tuple(attributes["pyloto.ratios"]) == (0.5, 0.25)
    assert attributes["gen_ai.usage.input_tokens"] == 120


def test_identity_kind_parent_and_times_are_unchanged(pipeline: Pipeline) -> None:
    """The exported copy has the original's trace and span ids, parent, kind, start and end
    times and instrumentation scope: the trace is the same, only its text is cleaned."""
    tracer = pipeline.tracer
    with (
        tracer.start_as_current_span("POST /webhook", kind=SpanKind.SERVER),
        tracer.start_as_current_span(f"chat {EMAIL}", kind=SpanKind.CLIENT),
    ):
        pass
    pairs = pipeline.pairs()
    assert len(pairs) == 2
    for recorded, exported in pairs:
        assert exported.context == recorded.context
        assert exported.parent == recorded.parent
        assert exported.kind is recorded.kind
        assert exported.start_time == recorded.start_time
        assert exported.end_time == recorded.end_time
        assert exported.instrumentation_scope == recorded.instrumentation_scope
    (child_recorded, child), (_, parent) = pairs
    assert child.parent is not None
    assert child.parent.span_id == parent.context.span_id
    assert child.kind is SpanKind.CLIENT
    assert child.name == "chat [email]"
    assert child_recorded.name == f"chat {EMAIL}", "the recorded span itself is not edited"


def test_recorded_exceptions_keep_only_their_type(pipeline: Pipeline) -> None:
    """`span.record_exception` writes the message and stack trace as event attributes: only
    `exception.type` leaves; the message quoting the customer and the stack do not."""
    with pipeline.tracer.start_as_current_span("step queued_outbound") as span:
        try:
            raise ValueError(f"Graph API rejected {WA_ID} ({EMAIL}), CPF {CPF}")
        except ValueError as error:
            span.record_exception(error)
    recorded, exported = pipeline.pairs()[0]
    assert set(recorded.events[0].attributes or {}) >= {
        "exception.type",
        "exception.message",
        "exception.stacktrace",
    }
    (event,) = exported.events
    assert event.name == "exception"
    assert attributes_of(event) == {"exception.type": "ValueError"}
    text = exported.to_json()
    assert "Graph API rejected" not in text
    assert "Traceback" not in text
    assert_clean(text)


def test_the_wrapper_passes_results_flush_and_shutdown_through() -> None:
    """The redacting exporter returns the real exporter's result and forwards flush and
    shutdown (after shutdown the in-memory exporter refuses further spans)."""
    inner = InMemorySpanExporter()
    wrapper = RedactingSpanExporter(inner, SpanRedactor(rules(), KEY))
    provider = TracerProvider()
    with provider.get_tracer("t").start_as_current_span(f"to {WA_ID}") as span:
        pass
    assert isinstance(span, ReadableSpan)
    assert wrapper.export([span]) is SpanExportResult.SUCCESS
    assert [s.name for s in inner.get_finished_spans()] == ["to [phone]"]
    assert wrapper.force_flush() is True
    wrapper.shutdown()
    assert wrapper.export([span]) is SpanExportResult.FAILURE
    provider.shutdown()


def test_a_whatsapp_id_given_as_a_number_is_redacted() -> None:
    """An allowed integer attribute holding a phone number is replaced; counts stay ints."""
    redactor = SpanRedactor(Redaction(allowed_attributes=("pyloto.*",)), "key")
    cleaned = redactor.attributes({"pyloto.to": 5511912345678, "pyloto.attempt": 2})
    assert cleaned == {"pyloto.to": "[phone]", "pyloto.attempt": 2}
