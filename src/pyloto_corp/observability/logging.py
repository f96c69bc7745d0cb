"""JSON log lines on stdout in Cloud Logging's shape, with personal data redacted.

`RedactingFilter` sits on the handler, so every record that leaves the process (ours,
uvicorn's, the SDKs') has its message, arguments, extra fields and exception text redacted
before `JsonFormatter` writes it with the trace and span of the work it belongs to.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TextIO

import msgspec
from opentelemetry import trace
from opentelemetry.trace import SpanContext

from pyloto_corp.domain.privacy import find_personal_data, redact_text

# LogRecord attributes that are not `extra=` fields.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's ANSI copy of the message
}
# `extra=` fields that carry a person's name: no pattern finds a name, so the names given
# there are removed from every part of the same line (themselves included).
NAME_FIELDS = frozenset({"contact_name", "profile_name"})
# Names of the customer whose message is being handled: an exception raised mid-step may
# quote them without saying so.
_names_in_scope: ContextVar[tuple[str, ...]] = ContextVar("pyloto_names", default=())
_REDACTED = "_pyloto_redacted"
_EXTRA = "_pyloto_extra"  # the redacted `extra=` fields, as the filter left them
# `extra=` fields whose values pyloto makes, never from customer or outside text: event,
# state and trigger names, the LLM step, LLM#1's event and LLM#3's message type (checked
# against their schemas' literals), and `ref` (a hash of the message id). A value of theirs
# is still checked by the detectors, once per distinct value, but not for names: a state
# called like the customer is still the state. A value that does not pass is redacted like
# any other.
IDENTIFIER_FIELDS = frozenset(
    {"event", "ref", "source", "dest", "trigger", "step", "detected", "chosen"}
)
_IDENTIFIER_MAX = 64  # longer values are not identifiers: redacted as text
_IDENTIFIERS_KEPT = 4096  # distinct values remembered (refs: one a message), then forgotten
_identifiers: dict[str, bool] = {}


@contextmanager
def names_in_scope(*names: str | None) -> Iterator[None]:
    """Redact these names from every log line written inside the block (this task only)."""
    token = _names_in_scope.set(_names_in_scope.get() + tuple(n for n in names if n))
    try:
        yield
    finally:
        _names_in_scope.reset(token)


def scrub_exception(error: BaseException, names: tuple[str, ...] = ()) -> None:
    """Redact personal data from `error`'s arguments (hence its text) and from the errors
    it was raised from, in place: its text ends up in logs, task errors and records."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        # An exception type with read-only args keeps them.
        with contextlib.suppress(AttributeError, TypeError):
            current.args = tuple(
                redact_text(arg, names) if isinstance(arg, str) else arg for arg in current.args
            )
        current = current.__cause__ or current.__context__


def _clean(value: Any, names: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return redact_text(value, names)
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):  # a WhatsApp id logged as a number is still a phone number
        if -(10**9) < value < 10**9:
            return value  # too short for a phone number: counts, codes, sizes
        text = str(value)
        cleaned = redact_text(text, names)
        return value if cleaned == text else cleaned
    if isinstance(value, dict):
        return {redact_text(str(k), names): _clean(v, names) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v, names) for v in value]
    return redact_text(repr(value), names)


def _is_identifier(value: str) -> bool:
    """Whether a value of an identifier field may be written as it is: short, and holding
    nothing the detectors find."""
    known = _identifiers.get(value)
    if known is None:
        known = len(value) <= _IDENTIFIER_MAX and not find_personal_data(value)
        if len(_identifiers) >= _IDENTIFIERS_KEPT:
            _identifiers.clear()
        _identifiers[value] = known
    return known


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's `extra=` fields."""
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _STANDARD and not key.startswith("_")
    }


class RedactingFilter(logging.Filter):
    """Redacts a record in place: message with its arguments, extra fields, exception and
    stack text. Names come from the record's name fields and from `names_in_scope`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _REDACTED, False):
            return True  # a second handler: already clean
        extra = extra_fields(record)
        names = tuple(str(extra[key]) for key in NAME_FIELDS if extra.get(key))
        names += _names_in_scope.get()
        record.msg = redact_text(record.getMessage(), names)
        record.args = None
        for key, value in extra.items():
            if key in IDENTIFIER_FIELDS and type(value) is str and _is_identifier(value):
                continue
            cleaned = _clean(value, names)
            if cleaned is not value:
                extra[key] = cleaned
                setattr(record, key, cleaned)
        if record.exc_info:
            text = "".join(traceback.format_exception(*record.exc_info))
            record.exc_text = text
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text, names)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info, names)
        setattr(record, _EXTRA, extra)
        setattr(record, _REDACTED, True)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: severity, message, event, extra fields, and the trace of the
    current span as Cloud Logging links it (`projects/P/traces/T`)."""

    converter = time.gmtime  # type: ignore[assignment]  # UTC, as Cloud Logging expects

    def __init__(self, project: str | None = None) -> None:
        super().__init__()
        self.project = project or "-"
        self._encoder = msgspec.json.Encoder(enc_hook=str)
        # The last second written and its text, and the last span context seen and its
        # fields: consecutive lines mostly share both. Each is one tuple, replaced whole, so
        # threads never see a second with another second's text.
        self._second: tuple[int, str] = (-1, "")
        self._span: tuple[SpanContext | None, dict[str, Any]] = (None, {})

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
            "time": self._time(record),
        }
        entry.update(self._trace())
        extra = record.__dict__.get(_EXTRA)
        entry.update(extra_fields(record) if extra is None else extra)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        try:
            return self._encoder.encode(entry).decode()
        except (TypeError, ValueError, OverflowError, UnicodeError):
            # What msgspec will not write (text with lone surrogates, keys that are not
            # strings or numbers) the standard encoder still does.
            return json.dumps(entry, ensure_ascii=False, default=str)

    def _time(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        cached = self._second
        if cached[0] != second:
            cached = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
            self._second = cached
        return f"{cached[1]}.{int(record.msecs):03d}Z"

    def _trace(self) -> dict[str, Any]:
        context = trace.get_current_span().get_span_context()
        cached = self._span
        if context is cached[0]:
            return cached[1]
        if not context.is_valid:
            return {}
        fields = {
            "logging.googleapis.com/trace": (
                f"projects/{self.project}/traces/{trace.format_trace_id(context.trace_id)}"
            ),
            "logging.googleapis.com/spanId": trace.format_span_id(context.span_id),
            "logging.googleapis.com/trace_sampled": context.trace_flags.sampled,
        }
        self._span = (context, fields)
        return fields


def configure_logging(
    level: str = "INFO", stream: TextIO | None = None, project: str | None = None
) -> None:
    """Send every logger's records to `stream` (stdout) as redacted JSON lines; `project`
    is the GCP project the trace links name."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter(project))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("uvicorn.access").disabled = True
    # transitions logs every callback at INFO, and the HTTP clients every request ("HTTP
    # Request: POST …", five a message): noise at our volume, and a tenth of the CPU the
    # pipeline spends a message. Their warnings and errors still come through.
    for noisy in ("transitions", "httpx", "httpx2", "httpcore", "httpcore2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # uvicorn's own start and stop lines ("Started server process", "Uvicorn running on",
    # "Waiting for application shutdown" …, eight in all) say what `pyloto serve`'s one line
    # each way says; its warnings and errors (a failed start-up, a protocol error) still come.
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
