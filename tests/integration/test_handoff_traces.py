"""A handoff as telemetry: each conversation transition is a span of its own, and neither
the spans nor the log lines of a whole handoff (keyword, held message, agent reply, release)
carry the customer's personal data or words.

The container runs the real SDK from otel.yaml behind production's redacting exporter (as in
test_traces.py); the log lines are what the service's JsonFormatter wrote.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from opentelemetry.sdk.trace import ReadableSpan

from pyloto_corp.bootstrap import bootstrap
from pyloto_corp.config import Settings
from pyloto_corp.http.app import create_app
from tests.e2e.support import Pyloto
from tests.support.helpers import INTERNAL_TOKEN, envelope, text_message
from tests.support.telemetry_capture import HASH_KEY, Captured

pytestmark = pytest.mark.anyio

HEADERS = {"X-Internal-Token": INTERNAL_TOKEN}
SENDER = "5511987654321"
NAME = "Maria Aparecida Nogueira"
EMAIL = "maria.nogueira@example.com.br"
CPF = "123.456.789-09"
# Her words, and the agent's (which name her), must stay out of telemetry and logs.
ASKING = f"Sou {NAME}, CPF {CPF}: quero falar com um atendente"
HELD = f"meu e-mail é {EMAIL}, pode me responder por lá?"
AGENT = f"Olá {NAME.split()[0]}, já vi seu pedido pelo e-mail {EMAIL}."
PERSONAL = [SENDER, NAME, *NAME.split(), EMAIL, CPF, "12345678909", ASKING, HELD, AGENT]

OpenApp = Callable[..., AbstractAsyncContextManager[Pyloto]]


@pytest.fixture
def open_app(make_settings: Callable[..., Settings], captured: Captured) -> OpenApp:
    @asynccontextmanager
    async def open_with() -> AsyncIterator[Pyloto]:
        settings = make_settings(PRIVACY_HASH_KEY=HASH_KEY, WHATSAPP_PACING_SECONDS="0")
        container = bootstrap(settings, telemetry=captured.runtime)
        async with AsyncTestClient(app=create_app(container)) as client:
            yield Pyloto(client)

    return open_with


def strings_of(span: ReadableSpan) -> list[str]:
    """Every text a span exports: its name, attribute values, events and their attributes."""
    found = [span.name, *(str(v) for v in (span.attributes or {}).values())]
    for event in span.events:
        found += [event.name, *(str(v) for v in (event.attributes or {}).values())]
    return found


async def _message(app: Pyloto, text: str) -> dict[str, Any]:
    message = text_message(text, sender=SENDER)
    assert (await app.post(envelope([message], sender=SENDER, name=NAME))).status_code == 200
    return await app.wait_for(message["id"], {"sent", "failed", "with_agent"})


async def test_a_handoff_draws_its_transitions_and_leaves_no_personal_data(
    open_app: OpenApp, captured: Captured, log_lines: io.StringIO
) -> None:
    """Keyword, held message, agent reply and release: spans `conversation request_human`,
    `conversation take_over` and `conversation release`, each naming the modes and reason;
    no span or log line carries the customer's number, name, e-mail, CPF or anyone's words."""
    async with open_app() as app:
        asked = await _message(app, ASKING)
        assert (asked["state"], asked["fallback_reason"]) == ("sent", "handoff")
        conversation = asked["conversation"]
        assert (await _message(app, HELD))["state"] == "with_agent"
        client = app.client
        base = f"/internal/conversations/{conversation}"
        reply = await client.post(f"{base}/messages", json={"text": AGENT}, headers=HEADERS)
        assert reply.status_code == 202, reply.text
        assert (await app.wait_for(reply.json()["message_id"]))["state"] == "sent"
        released = await client.post(f"{base}/release", headers=HEADERS)
        assert released.status_code == 200, released.text
        await app.wait_idle()

    changes = [
        (span.name, dict(span.attributes or {}))
        for span in captured.spans()
        if span.name.startswith("conversation ")
    ]
    assert [
        (name, a["pyloto.conversation.from"], a["pyloto.conversation.to"]) for name, a in changes
    ] == [
        ("conversation request_human", "bot", "waiting_human"),
        ("conversation take_over", "waiting_human", "human"),
        ("conversation release", "human", "bot"),
    ]
    assert [a["pyloto.conversation.reason"] for _, a in changes] == [
        "keyword",
        "agent_reply",
        "agent_release",
    ]

    exported = [text for span in captured.spans() for text in strings_of(span)]
    lines = log_lines.getvalue().splitlines()
    assert any('"conversation_mode_changed"' in line for line in lines), "the capture works"
    for secret in PERSONAL:
        for text in exported:
            assert secret.lower() not in text.lower(), f"personal data in a span: {text[:80]}"
        for line in lines:
            assert secret.lower() not in line.lower(), f"personal data in a log line: {line}"
