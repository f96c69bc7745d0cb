"""No personal data leaves in a log line or a span, whatever the customer writes.

Hypothesis generates phone numbers (every Brazilian and international format), e-mails, CPF
and CNPJ (formatted and bare) and Brazilian names, and puts them in every inbound field that
carries text: the text body, an image caption, interactive button and list titles and
descriptions, a location's name and address, and the contact's profile name. Each example runs
the whole pipeline (webhook → the media step for a voice note or picture, whose transcript or
description carries the data → LLM#1-3 on a local OpenAI-compatible server that echoes the data
back in its draft → send) with the JSON logs captured at DEBUG and the spans captured behind
the production exporter wrapper, and with the outbox raising errors that quote the customer.
`pii-scan`'s scanner must then find nothing, and no generated value may appear verbatim.
The scanner's own tests (tests/unit/test_pii_scan.py) show it finds each generated item when
it is not redacted, so the zero here means something.
"""

from __future__ import annotations

import asyncio
import copy
import io
import json
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from litestar.testing import AsyncTestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pyloto_corp.adapters.local_media import store_local_media
from pyloto_corp.application.ports import PermanentStepError, TransientStepError
from pyloto_corp.bootstrap import bootstrap
from pyloto_corp.config import load_settings
from pyloto_corp.devtools.fake_openai import (
    CHOICE,
    DEFAULTS,
    DRAFT,
    IMAGE,
    TRANSCRIPTION,
    FakeOpenAI,
    json_answer,
    transcript,
)
from pyloto_corp.http.app import create_app
from pyloto_corp.observability.logging import configure_logging
from pyloto_corp.observability.otel_config import load_otel_config
from pyloto_corp.observability.pii_scan import scan_lines
from pyloto_corp.observability.setup import build_telemetry
from tests.e2e.support import Pyloto
from tests.support.helpers import APP_SECRET, INTERNAL_TOKEN, VERIFY_TOKEN, load_payload, new_wamid
from tests.support.media_files import VOICE, png, voice_note
from tests.support.pii_strategies import brazilian_names, personal_data, whatsapp_ids

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = 100
AUDIO_ITEMS = [("cpf", "123.456.789-09"), ("e-mail", "maria.aparecida@exemplo.com.br")]
FIELDS = (
    "text",
    "image",
    "audio",  # a voice note: the data is in its transcript
    "interactive_button_reply",
    "interactive_list_reply",
    "location",
)


@dataclass
class Case:
    """One customer's message: where the data goes and how the send fails."""

    name: str
    sender: str
    items: list[tuple[str, str]]
    kind: str
    failure: str  # none | transient | permanent

    def sentence(self) -> str:
        """The data as a customer would write it."""
        parts = [f"meu {kind} é {value}" for kind, value in self.items]
        return f"Olá, sou {self.name}, " + ", ".join(parts)

    def secrets(self) -> list[str]:
        """Every value that must not leave the process verbatim."""
        return [self.name, self.sender, *(value for _, value in self.items)]


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """A message of one kind carrying 1-4 personal data items, a name and a sender."""
    return Case(
        name=draw(brazilian_names()),
        sender=draw(whatsapp_ids()),
        items=draw(st.lists(personal_data(), min_size=1, max_size=4)),
        kind=draw(st.sampled_from(FIELDS)),
        failure=draw(st.sampled_from(("none", "transient", "permanent"))),
    )


def webhook_for(case: Case, media: Path) -> dict[str, Any]:
    """A real fixture payload of the case's kind with every text field carrying the data (a
    picture or voice note served from the local media folder `media`)."""
    payload = copy.deepcopy(load_payload(f"messages/{case.kind}.json"))
    value = payload["entry"][0]["changes"][0]["value"]
    value["contacts"] = [{"profile": {"name": case.name}, "wa_id": case.sender}]
    message = value["messages"][0]
    message["from"] = case.sender
    message["id"] = new_wamid()
    text = case.sentence()
    if case.kind == "text":
        message["text"]["body"] = text
    elif case.kind == "image":
        message["image"]["caption"] = text
        message["image"]["id"] = store_local_media(media, png(), "image/png")
    elif case.kind == "audio":
        message["audio"]["id"] = store_local_media(media, voice_note(), VOICE)
    elif case.kind == "location":
        message["location"]["name"] = text
        message["location"]["address"] = f"Rua {case.name}, {case.items[0][1]}"
    else:
        reply = message["interactive"][message["interactive"]["type"]]
        reply["title"] = text
        reply["description"] = f"{case.name} {case.items[-1][1]}"
    return payload


class QuotingOutbox:
    """Outbox of our own port that fails the way a peer quoting the customer would."""

    reconcile_seconds = 0.0

    def __init__(self, case: Case) -> None:
        self.case = case
        self.sent: list[dict[str, Any]] = []
        self.failed = False

    async def send(self, body: dict[str, Any], phone_number_id: str = "") -> str:
        quote = f"cannot deliver to {self.case.sender} ({self.case.name}): {self.case.sentence()}"
        if self.case.failure == "permanent":
            raise PermanentStepError(quote)
        if self.case.failure == "transient" and not self.failed:
            self.failed = True
            raise TransientStepError(quote)
        self.sent.append(body)
        return f"wamid.OUT{len(self.sent)}"

    async def find_sent(self, message_id: str) -> str | None:
        return None

    async def mark_read(self, message_id: str, phone_number_id: str = "") -> None:
        raise TransientStepError(f"read receipt refused for {self.case.sender}")


@dataclass
class Output:
    """What left the process in one example."""

    log_lines: list[str] = field(default_factory=list)
    span_lines: list[str] = field(default_factory=list)
    final_state: str = ""

    def lines(self) -> list[str]:
        return self.log_lines + self.span_lines


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeOpenAI]:
    """A local OpenAI-compatible server for the whole module."""
    server = FakeOpenAI()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the root logger back as it was."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


async def run_case(case: Case, llm: FakeOpenAI, directory: Path) -> Output:
    """Post the case's webhook and let the pipeline finish; what was logged and exported."""
    llm.always(DRAFT, json_answer({"text": f"Oi {case.name}! Anotei: {case.sentence()}"}))
    # What the customer said or showed comes back from the media step, data and all.
    llm.always(TRANSCRIPTION, transcript(case.sentence()))
    llm.always(IMAGE, json_answer({"description": f"Documento de {case.name}: {case.sentence()}"}))
    llm.always(CHOICE, json_answer({**DEFAULTS[CHOICE], "body": f"{case.name}, anotado."}))
    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream)
    spans = InMemorySpanExporter()
    runtime = build_telemetry(
        load_otel_config(REPO / "otel.yaml"),
        hash_key="pii-property-hash-key",
        environ={},
        span_exporter_override=spans,
    )
    settings = load_settings(
        {
            "STATE_SQLITE_PATH": str(directory / "pyloto.db"),
            "WHATSAPP_APP_SECRET": APP_SECRET,
            "WHATSAPP_VERIFY_TOKEN": VERIFY_TOKEN,
            "INTERNAL_TASK_TOKEN": INTERNAL_TOKEN,
            "LOCAL_QUEUE_MIN_BACKOFF_SECONDS": "0.01",
            "LOCAL_QUEUE_MAX_BACKOFF_SECONDS": "0.02",
            "OPENAI_API_KEY": "sk-test",
            "OPENAI_BASE_URL": llm.base_url,
            "OPENAI_MAX_RETRIES": "0",
            "OPENAI_MASK_PII": "false",  # the LLM sees the raw text: the worst case
            "WHATSAPP_LOCAL_MEDIA_DIR": str(directory / "media"),
        }
    )
    container = bootstrap(settings, telemetry=runtime, outbox=QuotingOutbox(case))  # type: ignore[arg-type]
    payload = webhook_for(case, directory / "media")
    message_id = payload["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
    output = Output()
    async with AsyncTestClient(app=create_app(container)) as client:
        app = Pyloto(client)
        assert (await app.post(payload)).status_code == 200
        view = await app.wait_for(message_id)
        await app.wait_idle()
        output.final_state = view["state"]
    runtime.shutdown()
    output.log_lines = stream.getvalue().splitlines()
    output.span_lines = [span.to_json(indent=None) for span in spans.get_finished_spans()]
    return output


@pytest.mark.slow
@pytest.mark.timeout(600)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=cases())
# The media step's transcript and description always among the examples.
@example(case=Case("Maria Aparecida", "5511912345678", AUDIO_ITEMS, "audio", "transient"))
@example(case=Case("João Pereira", "5521987654321", AUDIO_ITEMS, "image", "none"))
def test_no_personal_data_leaves_in_logs_or_spans(
    case: Case, llm: FakeOpenAI, restore_logging: None
) -> None:
    """Whatever the customer writes and wherever, and whatever fails on the way, the logs
    and the exported spans hold none of it; the message still ends sent or failed."""
    with tempfile.TemporaryDirectory() as directory:
        output = asyncio.run(run_case(case, llm, Path(directory)))

    expected = "failed" if case.failure == "permanent" else "sent"
    assert output.final_state == expected
    assert output.log_lines, "the pipeline logged"
    assert any('"step llm1"' in line for line in output.span_lines), "the LLM path ran"
    findings = scan_lines(output.lines())
    assert not findings, f"{len(findings)} found, e.g. {[str(f) for f in findings[:3]]}"
    text = "\n".join(output.lines())
    leaked = [kind for kind, value in case.items if value in text]
    leaked += ["name"] if case.name in text else []
    leaked += ["sender"] if case.sender in text else []
    assert leaked == [], f"verbatim in the output: {leaked}"


def test_the_pipeline_output_would_be_caught_without_redaction() -> None:
    """The same kind of output, unredacted, is flagged: the scanner reads these lines."""
    case = Case("Maria Aparecida", "5511912345678", [("cpf", "123.456.789-09")], "text", "none")
    line = json.dumps({"severity": "INFO", "message": case.sentence(), "event": "x"})
    kinds = {finding.kind for finding in scan_lines([line])}
    assert kinds == {"cpf"}
