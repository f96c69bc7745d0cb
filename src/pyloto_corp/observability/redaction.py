"""Redaction at the process boundary: spans are copied, cleaned, then exported.

The SDK cannot change a span once it has ended, so the exporter wrapper hands the real
exporter redacted copies: attributes outside the allow-list are dropped, customer identities
become keyed hashes, and every string left (span name, attribute values, events, links,
status, resource) has phone numbers, WhatsApp ids, e-mails, CPF and CNPJ replaced.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Link, Status

from pyloto_corp.domain.privacy import redact_text
from pyloto_corp.observability.otel_config import Redaction, attribute_allowed

AttributeValue = Any


def keyed_hash(value: str, key: str) -> str:
    """A stable, irreversible stand-in for a customer identity (same key, same value)."""
    return "h:" + hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest()[:20]


class SpanRedactor:
    """Makes the exportable copy of a span."""

    def __init__(self, rules: Redaction, hash_key: str) -> None:
        self.rules = rules
        self.hash_key = hash_key
        self._resources: dict[int, Resource] = {}

    def text(self, value: str) -> str:
        """`value` with personal data and the configured extra patterns replaced."""
        value = redact_text(value)
        for pattern in self.rules.extra_patterns:
            value = pattern.sub("[redacted]", value)
        return value

    def _value(self, key: str, value: AttributeValue) -> AttributeValue:
        if key in self.rules.hashed_attributes:
            return keyed_hash(str(value), self.hash_key)
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**9:
            text = str(value)  # a WhatsApp id given as a number is still a phone number
            cleaned = self.text(text)
            return value if cleaned == text else cleaned
        if isinstance(value, list | tuple):
            return tuple(self._value("", item) for item in value)
        return value

    def attributes(self, attributes: Mapping[str, AttributeValue] | None) -> dict[str, Any]:
        """Allowed attributes only, their values hashed or redacted."""
        allowed = self.rules.allowed_attributes
        return {
            key: self._value(key, value)
            for key, value in (attributes or {}).items()
            if attribute_allowed(key, allowed)
        }

    def resource(self, resource: Resource) -> Resource:
        """The redacted resource (one per process: computed once)."""
        cached = self._resources.get(id(resource))
        if cached is None:
            cached = Resource(self.attributes(resource.attributes), resource.schema_url)
            self._resources = {id(resource): cached}
        return cached

    def span(self, span: ReadableSpan) -> ReadableSpan:
        """A redacted copy of `span`."""
        status = span.status
        if status.description:
            status = Status(status.status_code, self.text(status.description))
        return ReadableSpan(
            name=self.text(span.name),
            context=span.context,
            parent=span.parent,
            resource=self.resource(span.resource),
            attributes=self.attributes(span.attributes),
            events=[self._event(event) for event in span.events],
            links=[Link(link.context, self.attributes(link.attributes)) for link in span.links],
            kind=span.kind,
            status=status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )

    def _event(self, event: Event) -> Event:
        return Event(self.text(event.name), self.attributes(event.attributes), event.timestamp)


class RedactingSpanExporter(SpanExporter):
    """Hands redacted copies of spans to the real exporter."""

    def __init__(self, exporter: SpanExporter, redactor: SpanRedactor) -> None:
        self.exporter = exporter
        self.redactor = redactor

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Export the redacted copies."""
        return self.exporter.export([self.redactor.span(span) for span in spans])

    def shutdown(self) -> None:
        """Shut the real exporter down."""
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the real exporter."""
        return self.exporter.force_flush(timeout_millis)
