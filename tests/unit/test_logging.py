"""JSON log lines: one object a line in Cloud Logging's shape, with personal data redacted."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from pyloto_corp.observability.logging import JsonFormatter, RedactingFilter, configure_logging

PHONE = "+55 (11) 91234-5678"
WA_ID = "5511912345678"
EMAIL = "maria.aparecida@exemplo.com.br"
CPF = "123.456.789-09"
CNPJ = "12.345.678/0001-90"
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


@pytest.fixture
def logged() -> Iterator[Logged]:
    """A logger of its own, writing through JsonFormatter into memory."""
    logger = logging.getLogger("pyloto_corp.tests.json")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield Logged(logger, stream)
    finally:
        logger.removeHandler(handler)


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
    names = ("transitions", "uvicorn", "uvicorn.error", "uvicorn.access")
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
