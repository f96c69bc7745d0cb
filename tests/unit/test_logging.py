"""JSON log lines: one object a line in Cloud Logging's shape, with personal data redacted."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Sampler

from pyloto_corp.observability.logging import (
    JsonFormatter,
    RedactingFilter,
    configure_logging,
    names_in_scope,
    scrub_exception,
)
from tests.support.helpers import CNPJ, CPF, EMAIL, PHONE

WA_ID = "5511912345678"
NAME = "Maria Aparecida"
LEAKS = [PHONE, WA_ID, "91234-5678", EMAIL, CPF, "12345678909", CNPJ, NAME, "Maria", "Aparecida"]


@dataclass
class Logged:
    """A private logger and what its JSON handler wrote."""

    logger: logging.Logger
    stream: io.StringIO

    def lines(self) -> list[str]:
        """The lines written so far."""
        return self.stream.getvalue().splitlines()

    def only(self) -> dict[str, Any]:
        """The single line written, parsed; fails unless exactly one JSON object was written."""
        (line,) = self.lines()
        entry: dict[str, Any] = json.loads(line)
        return entry


@contextmanager
def capture(name: str, project: str | None = None) -> Iterator[Logged]:
    """A logger of its own, writing through the filter and JsonFormatter into memory."""
    logger = logging.getLogger(name)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter(project))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield Logged(logger, stream)
    finally:
        logger.removeHandler(handler)


@pytest.fixture
def logged() -> Iterator[Logged]:
    """A logger of its own, writing through JsonFormatter into memory."""
    with capture("pyloto_corp.tests.json") as found:
        yield found


def assert_clean(text: str) -> None:
    """No personal datum appears, in any letter case."""
    for leak in LEAKS:
        assert leak.lower() not in text.lower(), leak


def test_line_has_cloud_logging_shape(logged: Logged) -> None:
    """A record becomes one JSON object with severity, message, logger, UTC time and extras."""
    logged.logger.warning(
        "webhook_ingested", extra={"event": "webhook_ingested", "created_count": 2, "ok": True}
    )
    entry = logged.only()
    assert entry["severity"] == "WARNING"
    assert entry["message"] == "webhook_ingested"
    assert entry["logger"] == "pyloto_corp.tests.json"
    assert entry["time"].endswith("Z")
    assert entry["event"] == "webhook_ingested"
    assert entry["created_count"] == 2
    assert entry["ok"] is True


def test_personal_data_in_the_message_is_redacted(logged: Logged) -> None:
    """Phone, e-mail, CPF and CNPJ in the message (literal or from %-args) are redacted."""
    logged.logger.info("cliente %s escreveu: email %s, cpf %s, cnpj %s", PHONE, EMAIL, CPF, CNPJ)
    entry = logged.only()
    assert entry["message"] == "cliente [phone] escreveu: email [email], cpf [cpf], cnpj [cnpj]"
    assert entry["severity"] == "INFO"


def test_personal_data_in_extra_fields_is_redacted(logged: Logged) -> None:
    """Strings inside extra fields, nested dicts and lists, and dict keys are redacted."""
    logged.logger.info(
        "state",
        extra={
            "sender": WA_ID,
            "contact": {"email": EMAIL, "documents": [CPF, CNPJ]},
            "per_sender": {WA_ID: 3},
            "attempt": 2,
            "missing": None,
        },
    )
    text = logged.lines()[0]
    assert_clean(text)
    entry = logged.only()
    assert entry["sender"] == "[phone]"
    assert entry["contact"] == {"email": "[email]", "documents": ["[cpf]", "[cnpj]"]}
    assert entry["per_sender"] == {"[phone]": 3}
    assert entry["attempt"] == 2
    assert entry["missing"] is None


def test_objects_in_extra_fields_are_logged_redacted(logged: Logged) -> None:
    """An object passed as an extra is logged by its repr, with the personal data redacted."""

    @dataclass
    class Recipient:
        to: str
        email: str

    logged.logger.info("sending", extra={"recipient": Recipient(WA_ID, EMAIL)})
    text = logged.lines()[0]
    assert_clean(text)
    assert "[phone]" in logged.only()["recipient"]


def test_exception_text_is_redacted(logged: Logged) -> None:
    """The traceback of a logged exception loses the personal data in its message."""
    try:
        raise ValueError(f"Graph API rejected {WA_ID} ({EMAIL}), CPF {CPF}")
    except ValueError:
        logged.logger.exception("send_failed", extra={"event": "send_failed"})
    entry = logged.only()
    assert entry["severity"] == "ERROR"
    assert entry["message"] == "send_failed"
    assert "ValueError: Graph API rejected [phone] ([email]), CPF [cpf]" in entry["exception"]
    assert "Traceback" in entry["exception"]
    assert_clean(logged.lines()[0])


def test_contact_name_is_redacted_everywhere_in_the_line(logged: Logged) -> None:
    """A name given as `contact_name` is removed from itself, the message, other fields and the
    traceback, in any letter case."""
    try:
        raise RuntimeError(f"no reply for {NAME.upper()}")
    except RuntimeError:
        logged.logger.exception(
            "falando com %s", NAME, extra={"contact_name": NAME, "note": f"cliente {NAME.lower()}"}
        )
    text = logged.lines()[0]
    assert_clean(text)
    entry = logged.only()
    assert entry["message"] == "falando com [name]"
    assert entry["contact_name"] == "[name]"
    assert entry["note"] == "cliente [name]"
    assert "RuntimeError: no reply for [name]" in entry["exception"]


def test_multiline_text_stays_one_line(logged: Logged) -> None:
    """Newlines in messages and tracebacks are escaped: one record, one line."""
    try:
        raise KeyError("a\nb")
    except KeyError:
        logged.logger.exception("first line\nsecond line")
    assert len(logged.lines()) == 1
    assert logged.only()["message"] == "first line\nsecond line"


def test_non_ascii_is_written_as_is(logged: Logged) -> None:
    """Portuguese text is written readable (UTF-8), not as \\u escapes."""
    logged.logger.info("atenção: pedido não encontrado")
    assert "atenção: pedido não encontrado" in logged.lines()[0]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put back every logger setting configure_logging changes."""
    root = logging.getLogger()
    names = (
        "transitions",
        "httpx",
        "httpx2",
        "httpcore",
        "httpcore2",
        "uvicorn",
        "uvicorn.error",
        "uvicorn.access",
    )
    saved = {name: logging.getLogger(name) for name in names}
    state = {
        name: (lg.level, lg.handlers[:], lg.propagate, lg.disabled) for name, lg in saved.items()
    }
    root_handlers, root_level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = root_handlers
        root.setLevel(root_level)
        for name, lg in saved.items():
            lg.level, lg.handlers[:], lg.propagate, lg.disabled = state[name]


@pytest.mark.usefixtures("restore_logging")
def test_configure_logging_sends_every_logger_to_stdout_as_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """After configure_logging any logger writes redacted JSON lines to stdout at the level."""
    configure_logging("WARNING")
    assert any(
        isinstance(h, logging.StreamHandler) and h.stream is sys.stdout
        for h in logging.getLogger().handlers
    )
    logging.getLogger("pyloto_corp.anything").info("below the level")
    logging.getLogger("pyloto_corp.anything").warning("ligar para %s", PHONE)
    logging.getLogger("transitions.core").info("callback noise")
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["ligar para [phone]"]


@pytest.mark.usefixtures("restore_logging")
def test_http_clients_log_only_their_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    """The per-request INFO lines of httpx (OpenAI and Graph calls) are left out even at
    INFO; their warnings still come through."""
    configure_logging("INFO")
    logging.getLogger("httpx").info('HTTP Request: POST http://graph "HTTP/1.1 200 OK"')
    logging.getLogger("httpcore.connection").debug("connect_tcp.started")
    logging.getLogger("httpx").warning("pool exhausted")
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["pool exhausted"]


# --- the trace of the current span -----------------------------------------------------------

PROJECT = "pyloto-test"


@pytest.fixture
def traced() -> Iterator[Logged]:
    """Like `logged`, with the GCP project the trace links name."""
    with capture("pyloto_corp.tests.traced", PROJECT) as found:
        yield found


def _tracer(sampler: Sampler = ALWAYS_ON) -> trace.Tracer:
    """A tracer of a provider of its own (not installed globally)."""
    return TracerProvider(sampler=sampler).get_tracer("pyloto_corp.tests")


TRACE_KEYS = {
    "logging.googleapis.com/trace",
    "logging.googleapis.com/spanId",
    "logging.googleapis.com/trace_sampled",
}


def test_a_line_inside_a_span_carries_its_trace_in_cloud_loggings_fields(traced: Logged) -> None:
    """Logged inside an active span, a line names the trace as `projects/P/traces/T` (32 hex
    digits), the span id (16 hex digits) and `trace_sampled` true: Cloud Logging shows it
    under the span."""
    with _tracer().start_as_current_span("step received") as span:
        traced.logger.info("step_done")
    context = span.get_span_context()
    entry = traced.only()
    trace_field = entry["logging.googleapis.com/trace"]
    assert re.fullmatch(rf"projects/{PROJECT}/traces/[0-9a-f]{{32}}", trace_field)
    assert trace_field == f"projects/{PROJECT}/traces/{trace.format_trace_id(context.trace_id)}"
    assert entry["logging.googleapis.com/spanId"] == trace.format_span_id(context.span_id)
    assert re.fullmatch(r"[0-9a-f]{16}", entry["logging.googleapis.com/spanId"])
    assert entry["logging.googleapis.com/trace_sampled"] is True


def test_a_nested_span_gives_its_own_span_id_in_the_same_trace(traced: Logged) -> None:
    """Lines follow the current span: a child span's line has the child's id, same trace."""
    tracer = _tracer()
    with tracer.start_as_current_span("parent") as parent:
        traced.logger.info("in parent")
        with tracer.start_as_current_span("child") as child:
            traced.logger.info("in child")
    first, second = (json.loads(line) for line in traced.lines())
    assert first["logging.googleapis.com/trace"] == second["logging.googleapis.com/trace"]
    assert first["logging.googleapis.com/spanId"] == trace.format_span_id(
        parent.get_span_context().span_id
    )
    assert second["logging.googleapis.com/spanId"] == trace.format_span_id(
        child.get_span_context().span_id
    )


def test_a_span_sampled_out_is_still_linked_with_trace_sampled_false(traced: Logged) -> None:
    """A span the sampler dropped still has a valid context: its lines name the trace and
    say `trace_sampled` false."""
    with _tracer(ALWAYS_OFF).start_as_current_span("sampled out") as span:
        traced.logger.info("quiet")
    entry = traced.only()
    assert entry["logging.googleapis.com/trace"].endswith(
        trace.format_trace_id(span.get_span_context().trace_id)
    )
    assert entry["logging.googleapis.com/trace_sampled"] is False


def test_a_line_outside_any_span_has_no_trace_fields(traced: Logged) -> None:
    """Outside a span (and after one has ended) none of the trace keys is written."""
    traced.logger.info("before")
    with _tracer().start_as_current_span("between"):
        pass
    traced.logger.info("after")
    for line in traced.lines():
        assert not TRACE_KEYS & set(json.loads(line)), line


def test_without_a_project_the_trace_names_a_dash(logged: Logged) -> None:
    """With no GCP project known the trace field still has Cloud Logging's shape."""
    with _tracer().start_as_current_span("x"):
        logged.logger.info("inside")
    assert logged.only()["logging.googleapis.com/trace"].startswith("projects/-/traces/")


# --- names in scope, exceptions, several handlers --------------------------------------------


def test_names_in_scope_are_redacted_without_being_passed_in_extra(logged: Logged) -> None:
    """Inside `names_in_scope(NAME)` the name (whole or a distinctive part, any case) is
    removed from the message, every extra field and the exception text, though no extra
    field names it; outside the block it is not (it is not personal data by pattern)."""
    with names_in_scope(NAME):
        try:
            raise RuntimeError(f"no reply for {NAME.upper()}")
        except RuntimeError:
            logged.logger.exception(
                "mensagem de %s", "Maria", extra={"note": f"cliente {NAME.lower()}", "n": 1}
            )
    with names_in_scope(None, ""):
        logged.logger.info("Aparecida outside")
    inside, outside = (json.loads(line) for line in logged.lines())
    assert inside["message"] == "mensagem de [name]"
    assert inside["note"] == "cliente [name]"
    assert inside["n"] == 1
    assert "RuntimeError: no reply for [name]" in inside["exception"]
    assert_clean(logged.lines()[0])
    assert outside["message"] == "Aparecida outside"


def test_names_in_scope_nest_and_end_with_their_block(logged: Logged) -> None:
    """Nested blocks add their names; each block's names stop being redacted when it ends."""
    with names_in_scope(NAME):
        with names_in_scope("Joaquim Souza"):
            logged.logger.info("Maria e Joaquim")
        logged.logger.info("Maria e Joaquim")
    logged.logger.info("Maria e Joaquim")
    assert [json.loads(line)["message"] for line in logged.lines()] == [
        "[name] e [name]",
        "[name] e Joaquim",
        "Maria e Joaquim",
    ]


def test_scrub_exception_redacts_the_args_through_the_cause_chain() -> None:
    """scrub_exception edits the error's arguments, its __cause__ and __context__ in place:
    their text and the traceback written later are clean; non-text arguments are kept."""
    try:
        try:
            try:
                raise KeyError(f"no record for {WA_ID}")
            except KeyError:
                raise LookupError(f"lost {EMAIL}", 104) from None
        except LookupError as inner:
            raise RuntimeError(f"step failed for {NAME}, cpf {CPF}") from inner
    except RuntimeError as error:
        outer = error
    scrub_exception(outer, (NAME,))
    cause = outer.__cause__
    assert cause is not None
    assert outer.args == ("step failed for [name], cpf [cpf]",)
    assert cause.args == ("lost [email]", 104)
    hidden = cause.__context__  # suppressed by `from None`, still reachable: scrubbed too
    assert hidden is not None
    assert hidden.args == ("no record for [phone]",)
    text = "".join(traceback.format_exception(outer))
    assert "RuntimeError: step failed for [name], cpf [cpf]" in text
    assert "LookupError: ('lost [email]', 104)" in text
    assert_clean(text)


def test_scrub_exception_follows_the_implicit_context_and_stops_on_cycles() -> None:
    """An error raised while handling another has its context scrubbed too; a cycle in the
    chain does not loop forever."""
    first = ValueError(f"ligar {PHONE}")
    second = RuntimeError(f"cnpj {CNPJ}")
    second.__context__ = first
    first.__context__ = second
    scrub_exception(second)
    assert second.args == ("cnpj [cnpj]",)
    assert first.args == ("ligar [phone]",)


def test_scrub_exception_leaves_read_only_arguments_alone() -> None:
    """An exception type whose args cannot be set is left as it is (no error raised)."""

    class Frozen(Exception):
        @property
        def args(self) -> tuple[str, ...]:  # type: ignore[override]
            return (f"fixed {WA_ID}",)

    error = Frozen()
    error.__cause__ = ValueError(f"email {EMAIL}")
    scrub_exception(error)
    assert error.args == (f"fixed {WA_ID}",)
    assert error.__cause__.args == ("email [email]",)


def test_a_record_through_two_filtered_handlers_is_redacted_once() -> None:
    """Two handlers with the filter see the same record: it is redacted once, and both write
    the same clean line (the second pass does not mangle `[name]` into `[[name]]`)."""
    logger = logging.getLogger("pyloto_corp.tests.two_handlers")
    streams = [io.StringIO(), io.StringIO()]
    handlers = [logging.StreamHandler(stream) for stream in streams]
    for handler in handlers:
        handler.addFilter(RedactingFilter())
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        try:
            raise ValueError(f"bad {EMAIL}")
        except ValueError:
            logger.exception(
                "falando com %s em %s", NAME, PHONE, extra={"contact_name": NAME, "cpf": CPF}
            )
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
    first, second = (stream.getvalue() for stream in streams)
    assert first == second
    entry = json.loads(first)
    assert entry["message"] == "falando com [name] em [phone]"
    assert entry["contact_name"] == "[name]"
    assert entry["cpf"] == "[cpf]"
    assert "ValueError: bad [email]" in entry["exception"]
    assert entry["exception"].count("Traceback") == 1
    assert "[[" not in first
    assert_clean(first)


def test_a_whatsapp_id_logged_as_a_number_is_redacted(logged: Logged) -> None:
    """An integer extra that is a phone number leaves as `[phone]`; small counts stay ints."""
    logged.logger.info("sent", extra={"to": int(WA_ID), "attempt": 3})
    entry = logged.only()
    assert entry["to"] == "[phone]"
    assert entry["attempt"] == 3
