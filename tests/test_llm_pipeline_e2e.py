"""The LLM pipeline end to end: a signed webhook runs LLM#1-3 on the real `openai` SDK to `sent`.

The SDK is pointed by OPENAI_BASE_URL at `pyloto fake-openai`, a local HTTP server speaking the
chat completions API, so everything between the webhook and the dry-run outbox (or the local
Graph API server of tests/support/fake_graph.py) is the real code: the SDK's request building,
retries and parsing included. The server is told what to answer per step (by structured-output
schema) and keeps every request body it received.

The deploy guide runs this file by its path (`pytest tests/test_llm_pipeline_e2e.py -v`, and
with `--cov` for its coverage bar) and greps the logs for the three LLM events: it lives at the
top of tests/ for that, and needs only the root conftest's fixtures.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from html import escape
from typing import Any

import anyio
import pytest
from litestar.testing import AsyncTestClient

from pyloto_corp.ai.rollout import in_rollout
from pyloto_corp.application.llm_steps import conversation_id
from pyloto_corp.bootstrap import bootstrap
from pyloto_corp.config import Settings
from pyloto_corp.devtools.fake_openai import (
    CHOICE,
    DEFAULTS,
    DRAFT,
    EVENT,
    TRANSCRIPTION,
    Answer,
    FakeOpenAI,
    error,
    json_answer,
    raw_answer,
    refusal,
    transcript,
)
from pyloto_corp.domain.privacy import message_ref
from pyloto_corp.domain.records import InboundMessage
from pyloto_corp.domain.replies import reply_key
from pyloto_corp.http.app import create_app
from tests.e2e.support import FALLBACK_PATH, LLM_PATH, Pyloto, trajectory
from tests.support.accounts import ensure_account, post_sign_in
from tests.support.fake_graph import PHONE_NUMBER_ID, FakeGraph, Fault
from tests.support.fake_graph import TOKEN as GRAPH_TOKEN
from tests.support.helpers import (
    CONTACT_NAME,
    INTERNAL_TOKEN,
    SENDER,
    envelope,
    eventually,
    load_payload,
    new_wamid,
    now_stamp,
    shipped_templates,
    status,
    text_message,
)
from tests.support.llm_outputs import SATURDAY_SECTIONS, choice
from tests.support.media_files import VOICE, voice_note

pytestmark = pytest.mark.anyio

SITE = "https://barbearia-navalha.example.com.br"
BUSINESS_NAME = "Barbearia Navalha"
BUSINESS_HOURS = "terça a sábado, das 9h às 19h"
HASH_KEY = "llm-e2e-privacy-hash-key"
# Down from the deploy guide's 10 s so the timeout cases stay quick.
TIMEOUT_SECONDS = 0.5
# How long the fake waits before answering in the timeout cases: well past the timeout.
SLOW_ANSWER_SECONDS = 1.5

SCHEMA_OF_STEP = {"llm1": EVENT, "llm2": DRAFT, "llm3": CHOICE}
STEPS = ["llm1", "llm2", "llm3"]

OpenApp = Callable[..., AbstractAsyncContextManager[Pyloto]]


@pytest.fixture
def open_app(make_settings: Callable[..., Settings], fake_openai: FakeOpenAI) -> OpenApp:
    """Start the app with the LLM on the fake server: `async with open_app(VAR="x") as app`."""

    @asynccontextmanager
    async def open_with(**overrides: str) -> AsyncIterator[Pyloto]:
        variables = {
            "OPENAI_API_KEY": "sk-test",
            "OPENAI_BASE_URL": fake_openai.base_url,
            "OPENAI_TIMEOUT_SECONDS": "5",
            "OPENAI_MAX_RETRIES": "0",
            "BUSINESS_NAME": BUSINESS_NAME,
            "BUSINESS_HOURS": BUSINESS_HOURS,
            "BUSINESS_FAQ": "Corte: R$ 50. Barba: R$ 30.",
            "BUSINESS_WEBSITE_URL": SITE,
            "PRIVACY_HASH_KEY": HASH_KEY,
            **overrides,
        }
        app = create_app(bootstrap(make_settings(**variables)))
        async with AsyncTestClient(app=app) as client:
            yield Pyloto(client)

    return open_with


async def exchange(
    app: Pyloto, text: str, sender: str = SENDER, name: str = CONTACT_NAME
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Post one signed text message and wait for it to be sent: (record view, Graph API body)."""
    message = text_message(text, sender=sender)
    response = await app.post(envelope([message], sender=sender, name=name))
    assert response.status_code == 200, response.text
    view = await app.wait_for(message["id"])
    assert view["state"] == "sent", view
    (body,) = await app.sent_for(message["id"])
    return view, body


def request_text(request: dict[str, Any]) -> str:
    """Everything a request body carries, as one string (for 'is it in there' checks)."""
    return json.dumps(request, ensure_ascii=False)


def user_contents(request: dict[str, Any]) -> list[str]:
    """The contents of the request's user and assistant messages (the system prompt left out)."""
    return [m["content"] for m in request["messages"] if m["role"] != "system"]


# --- the happy path -----------------------------------------------------------------------


async def test_happy_path_sends_the_llm_buttons_through_llm1_llm2_llm3(
    open_app: OpenApp, fake_openai: FakeOpenAI
) -> None:
    """A question goes received → deduped → llm1 → llm2 → llm3 → queued_outbound → sending →
    sent, one request per step, each step fed by the one before; the Graph API gets LLM#3's
    buttons."""
    async with open_app() as app:
        view, body = await exchange(app, "Quanto custa o corte de cabelo?")

    assert trajectory(view) == LLM_PATH
    assert [h["trigger"] for h in view["history"]] == [
        "accept",
        "detect_event",
        "draft_reply",
        "choose_message_type",
        "queue_reply",
        "claim_send",
        "send",
    ]
    assert view["fallback_reason"] is None
    results = view["results"]
    assert results["event"] == "price"
    assert results["confidence"] == 0.93
    assert results["message_type"] == "buttons"
    assert results["repairs"] == []
    assert results["downgraded_from"] is None
    for step in STEPS:
        assert results[step]["input_tokens"] == 120
        assert results[step]["output_tokens"] == 40
        assert results[step]["model"] == "gpt-4o-mini"
        assert results[step]["latency_ms"] >= 0

    draft = DEFAULTS[DRAFT]["text"]
    assert body == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": SENDER,
        "context": {"message_id": view["message_id"]},
        "type": "interactive",
        "interactive": {
            "type": "button",
            "body": {"text": draft},
            "action": {
                "buttons": [
                    {"type": "reply", "reply": {"id": "agendar", "title": "Agendar horário"}},
                    {"type": "reply", "reply": {"id": "duvida", "title": "Tenho outra dúvida"}},
                ]
            },
        },
        "biz_opaque_callback_data": reply_key(view["message_id"]),
    }

    assert [r["response_format"]["json_schema"]["name"] for r in fake_openai.requests] == [
        EVENT,
        DRAFT,
        CHOICE,
    ]
    assert all(r["model"] == "gpt-4o-mini" for r in fake_openai.requests)
    (detect,) = fake_openai.seen(EVENT)
    assert "Quanto custa o corte de cabelo?" in user_contents(detect)[-1]
    (write,) = fake_openai.seen(DRAFT)
    assert "evento detectado: price" in user_contents(write)[-1]
    assert "Barbearia Navalha" in write["messages"][0]["content"]
    assert "Corte: R$ 50. Barba: R$ 30." in write["messages"][0]["content"]
    (pick,) = fake_openai.seen(CHOICE)
    assert draft in user_contents(pick)[-1], "LLM#3 chooses the type for LLM#2's draft"


async def test_happy_path_sends_a_list(open_app: OpenApp, fake_openai: FakeOpenAI) -> None:
    """A list chosen by LLM#3 reaches the Graph API as an interactive list with its rows."""
    fake_openai.queue(
        EVENT, json_answer({"event": "scheduling", "confidence": 0.9, "summary": "Agenda"})
    )
    fake_openai.queue(
        CHOICE,
        json_answer(
            choice(
                "list",
                "Escolha um horário para sábado:",
                header="Horários",
                list_button_text="Ver horários",
                sections=SATURDAY_SECTIONS,
            )
        ),
    )
    async with open_app() as app:
        view, body = await exchange(app, "Tem horário no sábado?")

    assert trajectory(view) == LLM_PATH
    assert view["results"]["message_type"] == "list"
    assert body["type"] == "interactive"
    assert body["interactive"] == {
        "type": "list",
        "body": {"text": "Escolha um horário para sábado:"},
        "header": {"type": "text", "text": "Horários"},
        "action": {
            "button": "Ver horários",
            "sections": [
                {
                    "title": "Manhã",
                    "rows": [
                        {"id": "9h", "title": "9h", "description": "Com o Carlos"},
                        {"id": "10h", "title": "10h"},
                    ],
                }
            ],
        },
    }


async def test_happy_path_sends_a_cta_to_the_business_site(
    open_app: OpenApp, fake_openai: FakeOpenAI
) -> None:
    """A CTA URL to BUSINESS_WEBSITE_URL's host is sent as it is; LLM#3 was told the site."""
    url = f"{SITE}/agendar?servico=corte"
    fake_openai.queue(
        CHOICE,
        json_answer(
            choice(
                "cta_url",
                "Agende pelo nosso site:",
                cta_display_text="Agendar online",
                cta_url=url,
            )
        ),
    )
    async with open_app() as app:
        view, body = await exchange(app, "Dá para agendar pela internet?")

    assert trajectory(view) == LLM_PATH
    assert body["interactive"] == {
        "type": "cta_url",
        "body": {"text": "Agende pelo nosso site:"},
        "action": {
            "name": "cta_url",
            "parameters": {"display_text": "Agendar online", "url": url},
        },
    }
    (pick,) = fake_openai.seen(CHOICE)
    assert SITE in pick["messages"][0]["content"]


# --- failures -----------------------------------------------------------------------------

# Valid JSON, wrong by the schema (an unknown event and a confidence of 7 for LLM#1).
WRONG_OUTPUT: dict[str, dict[str, Any]] = {
    EVENT: {"event": "weather_report", "confidence": 7, "summary": "x"},
    DRAFT: {"text": ""},
    CHOICE: choice("carousel", "Olá!"),
}

FAILURES: dict[str, Callable[[str], Answer]] = {
    "timeout": lambda schema: json_answer(DEFAULTS[schema], delay=SLOW_ANSWER_SECONDS),
    "rate_limited": lambda schema: error(429),
    "api_error": lambda schema: error(500),
    "refusal": lambda schema: refusal(),
    "unparsable": lambda schema: raw_answer('{"event": "price", "confid'),
    "invalid_output": lambda schema: json_answer(WRONG_OUTPUT[schema]),
}


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("reason", sorted(FAILURES))
async def test_each_failure_at_each_step_falls_back_with_its_reason(
    open_app: OpenApp, fake_openai: FakeOpenAI, step: str, reason: str
) -> None:
    """Timeout, 429, 500, refusal, malformed JSON and schema-breaking output at any step move
    the record to `fallback` with that reason at once: attempt 1, one request for the step
    (no queue retry), none for later steps, and a template for what the earlier steps learned
    (the detected event's template after LLM#1 succeeded, the message kind's before)."""
    if step != "llm1":
        detected = {"event": "scheduling", "confidence": 0.8, "summary": "Quer marcar horário."}
        fake_openai.queue(EVENT, json_answer(detected))
    fake_openai.queue(SCHEMA_OF_STEP[step], FAILURES[reason](SCHEMA_OF_STEP[step]))
    async with open_app(OPENAI_TIMEOUT_SECONDS=str(TIMEOUT_SECONDS)) as app:
        started = time.perf_counter()
        view, body = await exchange(app, "Queria marcar um corte para amanhã")
        elapsed = time.perf_counter() - started
    if reason == "timeout":
        print(  # the closing note reports this figure
            f"\nfallback latency ({step}, OPENAI_TIMEOUT_SECONDS={TIMEOUT_SECONDS}): "
            f"{elapsed:.3f} s from webhook to sent"
        )

    assert view["state"] == "sent"
    assert view["fallback_reason"] == reason
    assert view["results"]["fallback_step"] == step
    before = LLM_PATH[: LLM_PATH.index(step)]
    assert trajectory(view) == [*before, "fallback", "queued_outbound", "sending", "sent"]
    assert all(h["attempt"] == 1 for h in view["history"]), "no queue retry was spent"

    position = STEPS.index(step)
    for later in STEPS[position + 1 :]:
        assert fake_openai.seen(SCHEMA_OF_STEP[later]) == []
    assert len(fake_openai.seen(SCHEMA_OF_STEP[step])) == 1, "OPENAI_MAX_RETRIES=0: one request"

    inbound = InboundMessage("wamid.x", SENDER, "text", 0)
    expected_event = None if step == "llm1" else "scheduling"
    templates = shipped_templates(BUSINESS_NAME, BUSINESS_HOURS)
    template, text = templates.for_message(inbound, expected_event)
    assert view["results"]["template"] == template
    assert template == ("text" if step == "llm1" else "event:scheduling")
    assert body["type"] == "text"
    assert body["text"]["body"] == text
    assert body["to"] == SENDER


@pytest.mark.parametrize(("retries", "requests"), [(0, 1), (1, 2)])
async def test_a_server_error_is_retried_by_the_sdk_then_falls_back(
    open_app: OpenApp, fake_openai: FakeOpenAI, retries: int, requests: int
) -> None:
    """A 500 is retried OPENAI_MAX_RETRIES times by the SDK (the server sees each attempt)
    within the timeout, then the record falls back as `api_error` with the event's template."""
    fake_openai.always(DRAFT, error(500))
    async with open_app(OPENAI_MAX_RETRIES=str(retries)) as app:
        view, body = await exchange(app, "Quanto fica corte e barba?")

    assert view["fallback_reason"] == "api_error"
    assert view["results"]["fallback_step"] == "llm2"
    assert len(fake_openai.seen(DRAFT)) == requests
    assert len(fake_openai.seen(EVENT)) == 1
    assert view["results"]["template"] == "event:price"
    assert all(h["attempt"] == 1 for h in view["history"])
    assert "valores" in body["text"]["body"]


# --- WhatsApp's limits ----------------------------------------------------------------------


async def test_an_overlong_button_title_is_shortened_and_still_sent_as_buttons(
    open_app: OpenApp, fake_openai: FakeOpenAI
) -> None:
    """A 36-character button title is cut to WhatsApp's 20 with an ellipsis, the repair is
    recorded, and the reply is still interactive buttons."""
    long_title = "Quero agendar um horário para amanhã"
    fake_openai.queue(
        CHOICE,
        json_answer(
            choice(
                "buttons",
                "Podemos agendar?",
                buttons=[{"id": "sim", "title": long_title}, {"id": "nao", "title": "Agora não"}],
            )
        ),
    )
    async with open_app() as app:
        view, body = await exchange(app, "Quero cortar o cabelo")

    assert trajectory(view) == LLM_PATH
    assert view["results"]["repairs"] == ["button title shortened to 20"]
    assert view["results"]["downgraded_from"] is None
    assert body["type"] == "interactive"
    buttons = body["interactive"]["action"]["buttons"]
    first = buttons[0]["reply"]["title"]
    assert len(first) <= 20
    assert first.endswith("…")
    assert long_title.startswith(first[:-1])
    assert buttons[1]["reply"] == {"id": "nao", "title": "Agora não"}


@pytest.mark.parametrize(
    ("kind", "parts"),
    [
        (
            "buttons",
            {
                "buttons": [
                    {"id": f"b{n}", "title": title}
                    for n, title in enumerate(["Corte", "Barba", "Sobrancelha", "Pacote"])
                ]
            },
        ),
        (
            "cta_url",
            {"cta_display_text": "Ver preços", "cta_url": "https://outro-site.example.net/precos"},
        ),
    ],
    ids=["four-buttons", "cta-to-another-host"],
)
async def test_what_cannot_be_repaired_is_downgraded_to_text(
    open_app: OpenApp, fake_openai: FakeOpenAI, kind: str, parts: dict[str, Any]
) -> None:
    """Four buttons, or a CTA link to a host other than the business's site, cannot be
    repaired safely: the same body goes out as plain text, and the record says why."""
    fake_openai.queue(CHOICE, json_answer(choice(kind, "Temos corte, barba e pacotes.", **parts)))
    async with open_app() as app:
        view, body = await exchange(app, "O que vocês fazem?")

    assert trajectory(view) == LLM_PATH, "a downgrade is not a fallback"
    assert view["results"]["downgraded_from"] == kind
    assert len(view["results"]["repairs"]) == 1
    assert body["type"] == "text"
    assert body["text"] == {"preview_url": False, "body": "Temos corte, barba e pacotes."}
    assert "interactive" not in body


# --- rollout --------------------------------------------------------------------------------


def sender_number(n: int) -> str:
    """A distinct Brazilian mobile number per test customer."""
    return f"55119{n:08d}"


async def post_from(app: Pyloto, senders: list[str], per_sender: int) -> dict[str, list[str]]:
    """Post `per_sender` messages from each sender; sender → message ids."""
    sent: dict[str, list[str]] = {}
    for round_number in range(per_sender):
        for sender in senders:
            message = text_message(f"Mensagem {round_number} do cliente", sender=sender)
            response = await app.post(envelope([message], sender=sender))
            assert response.status_code == 200
            sent.setdefault(sender, []).append(message["id"])
    return sent


async def test_rollout_zero_samples_everyone_out_without_a_request(
    open_app: OpenApp, fake_openai: FakeOpenAI
) -> None:
    """At OPENAI_ROLLOUT_PERCENT=0 every message falls back `sampled_out` at LLM#1 and the
    LLM server never hears of it."""
    async with open_app(OPENAI_ROLLOUT_PERCENT="0") as app:
        posted = await post_from(app, [sender_number(n) for n in range(4)], per_sender=2)
        views = [await app.wait_for(mid) for ids in posted.values() for mid in ids]

    assert len(views) == 8
    for view in views:
        assert view["state"] == "sent"
        assert view["fallback_reason"] == "sampled_out"
        assert view["results"]["fallback_step"] == "llm1"
    assert fake_openai.requests == []


async def test_rollout_hundred_sends_everyone_through_the_llm(
    open_app: OpenApp, fake_openai: FakeOpenAI
) -> None:
    """At OPENAI_ROLLOUT_PERCENT=100 every message takes the LLM path, three requests each."""
    async with open_app(OPENAI_ROLLOUT_PERCENT="100") as app:
        posted = await post_from(app, [sender_number(n) for n in range(5)], per_sender=1)
        views = [await app.wait_for(mid) for ids in posted.values() for mid in ids]

    assert [trajectory(v) for v in views] == [LLM_PATH] * 5
    assert len(fake_openai.requests) == 15


async def test_rollout_fifty_splits_senders_and_keeps_each_on_one_path(
    open_app: OpenApp, fake_openai: FakeOpenAI
) -> None:
    """At 50 % three messages from each of 20 senders: each sender's messages all take the
    same path, both paths occur, and the keyed hash of the sender is what decided."""
    senders = [sender_number(n) for n in range(20)]
    async with open_app(OPENAI_ROLLOUT_PERCENT="50") as app:
        posted = await post_from(app, senders, per_sender=3)
        paths = {
            sender: {tuple(trajectory(await app.wait_for(mid))) for mid in ids}
            for sender, ids in posted.items()
        }

    on_llm = set()
    for sender, seen in paths.items():
        assert len(seen) == 1, f"sender {sender} took two paths: {seen}"
        (path,) = seen
        if list(path) == LLM_PATH:
            on_llm.add(sender)
        else:
            assert list(path) == FALLBACK_PATH
    assert 0 < len(on_llm) < len(senders), "both paths occur"
    assert on_llm == {s for s in senders if in_rollout(conversation_id(s, HASH_KEY), 50)}
    assert len(fake_openai.seen(EVENT)) == 3 * len(on_llm)


# --- privacy and memory ---------------------------------------------------------------------

CPF = "123.456.789-09"
CNPJ = "12.345.678/0001-90"
EMAIL = "jp.1987@exemplo.com.br"
PHONE = "(11) 98765-4321"
NAME = "João Pereira"
PERSONAL_TEXT = (
    f"Oi, aqui é o {NAME}. Meu CPF é {CPF}, a empresa tem CNPJ {CNPJ}, "
    f"e-mail {EMAIL} e telefone {PHONE}. Quanto custa o corte?"
)


async def test_personal_data_is_masked_before_it_reaches_the_llm(
    open_app: OpenApp, fake_openai: FakeOpenAI
) -> None:
    """CPF, CNPJ, e-mail, phone and the contact's name in the customer's text never reach the
    LLM server; placeholders stand in their place, and the sender's number is not sent."""
    async with open_app() as app:
        view, _ = await exchange(app, PERSONAL_TEXT, name=NAME)

    assert trajectory(view) == LLM_PATH
    assert len(fake_openai.requests) == 3
    everything = " ".join(request_text(r) for r in fake_openai.requests)
    for secret in (CPF, "12345678909", CNPJ, EMAIL, PHONE, "98765-4321", SENDER, "João", "Pereira"):
        assert secret not in everything, f"{secret!r} reached the LLM"
    for request in (fake_openai.seen(EVENT)[0], fake_openai.seen(DRAFT)[0]):
        said = user_contents(request)[-1]
        for placeholder in ("[name]", "[cpf]", "[cnpj]", "[email]", "[phone]"):
            assert placeholder in said
        assert "Quanto custa o corte?" in said


async def test_without_masking_the_cpf_is_sent_but_never_the_contact_name(
    open_app: OpenApp, fake_openai: FakeOpenAI
) -> None:
    """With OPENAI_MASK_PII=false the customer's text goes as written (CPF, e-mail included),
    except the contact's name, which is never sent."""
    async with open_app(OPENAI_MASK_PII="false") as app:
        await exchange(app, PERSONAL_TEXT, name=NAME)

    said = user_contents(fake_openai.seen(EVENT)[0])[-1]
    assert CPF in said
    assert EMAIL in said
    assert CNPJ in said
    assert "[name]" in said
    everything = " ".join(request_text(r) for r in fake_openai.requests)
    assert "João" not in everything
    assert "Pereira" not in everything


async def test_the_second_message_shows_the_conversation_so_far_to_llm2(
    open_app: OpenApp, fake_openai: FakeOpenAI
) -> None:
    """LLM#2's request for a customer's second message carries their first message (masked)
    and the reply they got, in order; another customer's conversation is not in it."""
    first_reply = "O corte custa R$ 50. Quer agendar?"
    other_reply = "No domingo estamos fechados."
    fake_openai.queue(DRAFT, json_answer({"text": first_reply}), json_answer({"text": other_reply}))
    fake_openai.queue(
        CHOICE,
        json_answer(choice("text", first_reply)),
        json_answer(choice("text", other_reply)),
    )
    other = sender_number(77)
    async with open_app() as app:
        await exchange(app, f"Quanto custa o corte? Meu e-mail é {EMAIL}")
        await exchange(app, "Vocês abrem no domingo?", sender=other, name="Ana Souza")
        await exchange(app, "E a barba?")

    first, others, second = fake_openai.seen(DRAFT)
    assert user_contents(first) == [user_contents(first)[-1]], "no history the first time"
    assert user_contents(others) == [user_contents(others)[-1]], "a new customer starts afresh"
    history = second["messages"][1:-1]
    assert history == [
        {"role": "user", "content": "Quanto custa o corte? Meu e-mail é [email]"},
        {"role": "assistant", "content": first_reply},
    ]
    assert second["messages"][-1]["role"] == "user"
    assert second["messages"][-1]["content"].startswith("E a barba?")
    assert "domingo" not in request_text(second)
    assert other_reply not in request_text(second)


async def test_llm_disabled_with_a_key_makes_no_request(
    open_app: OpenApp, fake_openai: FakeOpenAI
) -> None:
    """OPENAI_ENABLED=false wins over a configured key: template reply, reason
    `llm_disabled`, and the LLM server sees nothing."""
    async with open_app(OPENAI_ENABLED="false") as app:
        view, body = await exchange(app, "Quanto custa o corte?")

    assert trajectory(view) == FALLBACK_PATH
    assert view["fallback_reason"] == "llm_disabled"
    assert view["results"]["template"] == "text"
    assert body["type"] == "text"
    assert fake_openai.requests == []


# --- logs -----------------------------------------------------------------------------------


async def test_each_step_logs_one_line_with_latency_and_tokens_and_never_the_text(
    open_app: OpenApp, fake_openai: FakeOpenAI, log_lines: io.StringIO
) -> None:
    """A message on the LLM path logs llm1_event_detected, llm2_response_generated and
    llm3_message_type_selected; one whose LLM#2 is rate limited logs llm_fallback with the
    reason. Each line has latency_ms and token counts, and no line carries the customer's text
    or the reply."""
    customer_text = "Preciso de um corte degradê urgente"
    reply = "Temos horário hoje às 15h para o degradê"
    fake_openai.queue(DRAFT, json_answer({"text": reply}), error(429))
    fake_openai.queue(CHOICE, json_answer(choice("text", reply)))
    async with open_app() as app:
        await exchange(app, customer_text)
        view, _ = await exchange(app, "Outra pergunta sobre a navalha")
    assert view["fallback_reason"] == "rate_limited"

    entries = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    by_event: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        by_event.setdefault(str(entry.get("event")), []).append(entry)
    for event in ("llm1_event_detected", "llm2_response_generated", "llm3_message_type_selected"):
        assert event in by_event, f"{event} was not logged"
    assert len(by_event["llm1_event_detected"]) == 2
    assert len(by_event["llm2_response_generated"]) == 1
    assert len(by_event["llm3_message_type_selected"]) == 1
    (fallback,) = by_event["llm_fallback"]
    assert fallback["reason"] == "rate_limited"
    assert fallback["step"] == "llm2"
    assert fallback["severity"] == "WARNING"
    assert fallback["latency_ms"] >= 0
    for event in ("llm1_event_detected", "llm2_response_generated", "llm3_message_type_selected"):
        for entry in by_event[event]:
            assert entry["latency_ms"] >= 0
            assert entry["input_tokens"] == 120
            assert entry["output_tokens"] == 40
            assert entry["model"] == "gpt-4o-mini"
    assert by_event["llm1_event_detected"][0]["detected"] == "price"
    assert by_event["llm3_message_type_selected"][0]["chosen"] == "text"

    for line in log_lines.getvalue().splitlines():
        for text in (customer_text, "degradê", reply, "navalha", DEFAULTS[EVENT]["summary"]):
            assert text.lower() not in line.lower(), f"{text!r} in log line: {line}"


async def test_what_an_llm_writes_is_masked_before_the_next_llm_and_in_the_view(
    open_app: OpenApp, fake_openai: FakeOpenAI
) -> None:
    """An LLM that repeats the customer's name and number (in LLM#1's summary, LLM#2's draft,
    LLM#3's message) does not pass them on: not to the next LLM's prompt, not to the next
    conversation turn's prompt, not to the operator's view of the record."""
    leaky = f"Cliente {NAME}, telefone {PHONE}, quer saber o preço"
    fake_openai.queue(EVENT, json_answer({"event": "price", "confidence": 0.9, "summary": leaky}))
    fake_openai.queue(DRAFT, json_answer({"text": f"Olá {NAME}! Ligamos no {PHONE}."}))
    fake_openai.queue(CHOICE, json_answer(choice("text", f"Olá {NAME}! Ligamos no {PHONE}.")))
    async with open_app() as app:
        view, _ = await exchange(app, "Quanto custa o corte?", name=NAME)
        await exchange(app, "E a barba?", name=NAME)

    later = [*fake_openai.seen(DRAFT), *fake_openai.seen(CHOICE)]
    assert len(later) == 4
    for request in later:
        for secret in ("João", "Pereira", PHONE, "98765-4321"):
            assert secret not in request_text(request), f"{secret!r} reached a later LLM"
    assert "[name]" in request_text(fake_openai.seen(CHOICE)[0])
    shown = json.dumps(view, ensure_ascii=False)
    for secret in ("João", "Pereira", PHONE, "98765-4321"):
        assert secret not in shown, f"{secret!r} is in the record view"
    assert "[phone]" in view["results"]["summary"]


# --- the deploy guide's checks --------------------------------------------------------------

GUIDE_EVENTS = ("llm1_event_detected", "llm2_response_generated", "llm3_message_type_selected")


async def test_the_deploy_guides_log_query_finds_the_three_events_in_order_for_one_message(
    open_app: OpenApp, log_lines: io.StringIO
) -> None:
    """The runbook's check (`jsonPayload.event=(llm1_event_detected OR
    llm2_response_generated OR llm3_message_type_selected)`, oldest first): one message on
    the LLM path logs the three, once each and in that order, under one `ref`, in Cloud
    Logging's shape."""
    async with open_app() as app:
        view, _ = await exchange(app, "Vocês cortam cabelo cacheado?")
    assert trajectory(view) == LLM_PATH

    entries = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    found = [entry for entry in entries if entry.get("event") in GUIDE_EVENTS]
    assert [entry["event"] for entry in found] == list(GUIDE_EVENTS)
    assert len({entry["ref"] for entry in found}) == 1
    assert all(entry["severity"] == "INFO" for entry in found)
    assert all(entry["message"] == entry["event"] for entry in found)


# --- the welcome ----------------------------------------------------------------------------


async def test_a_welcome_request_is_greeted_by_the_template_without_asking_the_llm(
    open_app: OpenApp, fake_openai: FakeOpenAI
) -> None:
    """A customer opening the chat for the first time (`request_welcome`) has written
    nothing: with the LLM on, no LLM call is made on nothing; the welcome template, naming
    BUSINESS_NAME, is the reply, and the fallback reason says it was chosen (`welcome`)."""
    payload = load_payload("corpus/request_welcome.json")
    (message,) = payload["entry"][0]["changes"][0]["value"]["messages"]
    async with open_app() as app:
        assert (await app.post(payload)).status_code == 200
        view = await app.wait_for(message["id"])
        (body,) = await app.sent_for(message["id"])

    assert trajectory(view) == FALLBACK_PATH
    assert view["fallback_reason"] == "welcome"
    assert view["results"]["template"] == "welcome"
    assert fake_openai.requests == []
    assert BUSINESS_NAME in body["text"]["body"]
    assert BUSINESS_HOURS in body["text"]["body"]


# --- through the Graph API ------------------------------------------------------------------

SECOND_NUMBER = "106540352242933"


@pytest.fixture
def open_graph_app(open_app: OpenApp, graph: FakeGraph) -> OpenApp:
    """The LLM app replying through the fake Graph API, from two business numbers."""
    graph.add_number(SECOND_NUMBER)

    def open_with(**overrides: str) -> AbstractAsyncContextManager[Pyloto]:
        variables = {
            "WHATSAPP_ACCESS_TOKEN": GRAPH_TOKEN,
            "WHATSAPP_PHONE_NUMBER_ID": PHONE_NUMBER_ID,
            "WHATSAPP_PHONE_NUMBER_IDS": SECOND_NUMBER,
            "WHATSAPP_API_BASE_URL": graph.base_url,
            "WHATSAPP_TIMEOUT_SECONDS": "2",
        }
        return open_app(**(variables | overrides))

    return open_with


async def post_to(app: Pyloto, text: str, phone_number_id: str) -> str:
    """Post one signed text message written to the business number `phone_number_id`."""
    message = text_message(text)
    payload = envelope([message])
    payload["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = phone_number_id
    response = await app.post(payload)
    assert response.status_code == 200, response.text
    return str(message["id"])


async def test_an_llm_reply_goes_out_from_the_business_number_written_to(
    open_graph_app: OpenApp, graph: FakeGraph
) -> None:
    """The three LLM steps' reply is sent through the Graph API from the second business
    number the customer wrote to, and the message is marked read through it too."""
    async with open_graph_app() as app:
        message_id = await post_to(app, "Quanto custa a barba?", SECOND_NUMBER)
        view = await app.wait_for(message_id)

    assert trajectory(view) == LLM_PATH
    (send,) = graph.sends_for(message_id)
    assert send.phone_number_id == SECOND_NUMBER
    assert send.body["type"] == "interactive"
    assert view["outbound_message_id"] == send.outbound_id
    assert graph.read_number(message_id) == [SECOND_NUMBER]


async def test_an_llm_message_to_a_number_not_configured_costs_no_llm_call_nor_graph_request(
    open_graph_app: OpenApp, graph: FakeGraph, fake_openai: FakeOpenAI
) -> None:
    """A message to another number of the Meta app ends `ignored` at once, with its reason:
    no LLM step runs for it and no request reaches Graph."""
    async with open_graph_app() as app:
        message_id = await post_to(app, "Quanto custa a barba?", "999999999999999")
        view = await app.wait_for(message_id)
        await app.wait_idle()

    assert trajectory(view) == ["received", "ignored"]
    assert view["results"]["ignored_reason"] == "unknown_business_number"
    assert fake_openai.requests == []
    assert graph.requests == []


async def test_an_llm_reply_graph_refuses_is_dead_lettered_then_replayed_once(
    open_graph_app: OpenApp, graph: FakeGraph, fake_openai: FakeOpenAI
) -> None:
    """Graph refuses the LLM's reply permanently (131026): the record is dead-lettered with
    its reply kept; `POST /internal/replay` sends that same reply once, from the same
    number, with no new LLM call."""
    graph.inject(Fault(code=131026))
    async with open_graph_app() as app:
        message_id = await post_to(app, "Vocês abrem domingo?", SECOND_NUMBER)
        failed = await app.wait_for(message_id)
        assert failed["state"] == "failed"
        assert "131026" in failed["failure_reason"]
        llm_requests = len(fake_openai.requests)
        response = await app.client.post(
            "/internal/replay",
            json={"message_id": message_id},
            headers={"X-Internal-Token": INTERNAL_TOKEN},
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"replayed": [message_id], "skipped": {}}
        view = await app.wait_for(message_id, {"sent"})
        await app.wait_idle()

    assert [h["trigger"] for h in view["history"][-4:]] == [
        "dead_letter",
        "replay_send",
        "claim_send",
        "send",
    ]
    (send,) = graph.sends_for(message_id)
    assert send.phone_number_id == SECOND_NUMBER
    assert send.body == failed["reply"] | {"to": SENDER}
    assert len(fake_openai.requests) == llm_requests


async def test_a_voice_note_is_transcribed_then_answered_by_the_three_llm_steps(
    open_graph_app: OpenApp, graph: FakeGraph, fake_openai: FakeOpenAI
) -> None:
    """A voice note is fetched from Graph, transcribed, and LLM#1 reads the transcript
    (masked) instead of asking the customer to type."""
    graph.add_media("4101", voice_note(), VOICE)
    fake_openai.queue(TRANSCRIPTION, transcript(f"Quero marcar um corte, meu CPF é {CPF}"))
    message = {
        "from": SENDER,
        "id": new_wamid(),
        "timestamp": now_stamp(),
        "type": "audio",
        "audio": {"mime_type": VOICE, "id": "4101", "voice": True},
    }
    async with open_graph_app(WHATSAPP_PACING_SECONDS="0") as app:
        assert (await app.post(envelope([message]))).status_code == 200
        view = await app.wait_for(message["id"])

    assert trajectory(view) == [*LLM_PATH[:2], "media", *LLM_PATH[2:]]
    (detect,) = fake_openai.seen(EVENT)
    assert "Quero marcar um corte" in request_text(detect)
    assert CPF not in request_text(detect)
    assert len(graph.sends_for(message["id"])) == 1


async def test_an_llm_reply_whose_graph_answer_is_lost_is_reconciled_not_resent(
    open_graph_app: OpenApp, graph: FakeGraph, fake_openai: FakeOpenAI
) -> None:
    """Graph accepts the LLM's reply but answers after the client gave up: the send is in
    doubt, so the retried task waits instead of sending again; the status webhook echoing
    the reply's key records it as sent. One request to Graph, one run of each LLM step."""
    graph.inject(Fault(delay=1.5))
    settings = {
        "WHATSAPP_TIMEOUT_SECONDS": "0.5",
        "LOCAL_QUEUE_MIN_BACKOFF_SECONDS": "0.3",
        "LOCAL_QUEUE_MAX_BACKOFF_SECONDS": "1.0",
    }
    async with open_graph_app(**settings) as app:
        message_id = await post_to(app, "Tem horário amanhã?", PHONE_NUMBER_ID)
        await eventually(lambda: len(graph.sends_for(message_id)) == 1)
        (send,) = graph.sends_for(message_id)
        await anyio.to_thread.run_sync(send.answered.wait, 10.0)
        assert (await app.view(message_id))["state"] == "sending"
        statuses = [status(send.outbound_id, "sent", 1_732_500_100, callback=message_id)]
        assert (await app.post(envelope(statuses=statuses))).status_code == 200
        view = await app.wait_for(message_id)

    assert view["state"] == "sent"
    assert view["outbound_message_id"] == send.outbound_id
    assert len(graph.message_requests()) == 1
    for schema in (EVENT, DRAFT, CHOICE):
        assert len(fake_openai.seen(schema)) == 1


async def test_a_rate_limited_send_of_an_llm_reply_is_retried_without_asking_the_llm_again(
    open_graph_app: OpenApp, graph: FakeGraph, fake_openai: FakeOpenAI
) -> None:
    """Graph's throughput limit (130429) fails the send task; the outbound queue retries the
    same reply, which is sent once: the LLM is not asked again."""
    graph.inject(Fault(code=130429))
    async with open_graph_app() as app:
        message_id = await post_to(app, "Qual o preço do pacote?", PHONE_NUMBER_ID)
        view = await app.wait_for(message_id)

    assert trajectory(view)[-1] == "sent"
    assert len(graph.message_requests()) == 2
    assert len(graph.sends_for(message_id)) == 1
    assert view["history"][-1]["attempt"] == 2
    for schema in (EVENT, DRAFT, CHOICE):
        assert len(fake_openai.seen(schema)) == 1


async def test_a_redelivered_webhook_runs_the_llm_steps_once(
    open_app: OpenApp, fake_openai: FakeOpenAI
) -> None:
    """Meta delivers at least once: the same message posted three times (twice at once)
    makes one record, one run of each LLM step and one reply."""
    message = text_message("Vocês fazem sobrancelha?")
    payload = envelope([message])
    async with open_app() as app:
        first, second = await asyncio.gather(app.post(payload), app.post(payload))
        third = await app.post(payload)
        view = await app.wait_for(message["id"])
        await app.wait_idle()
        sent = await app.sent_for(message["id"])

    assert [r.status_code for r in (first, second, third)] == [200, 200, 200]
    assert sum(r.json()["created"] for r in (first, second, third)) == 1
    assert trajectory(view) == LLM_PATH
    assert len(sent) == 1
    for schema in (EVENT, DRAFT, CHOICE):
        assert len(fake_openai.seen(schema)) == 1


async def test_the_ops_console_lists_llm_fallbacks_by_their_reason(
    open_app: OpenApp, fake_openai: FakeOpenAI
) -> None:
    """An operator finds the message whose LLM#2 was rate limited by that reason, and only
    it; the dashboard counts both messages' paths."""
    fake_openai.queue(DRAFT, error(429))
    async with open_app(OPS_CONSOLE_ENABLED="true") as app:
        fallen, _ = await exchange(app, "Quanto custa a barba?")
        on_llm, _ = await exchange(app, "E o corte?")
        await ensure_account(app.container.settings)
        signed_in = await post_sign_in(app.client)
        assert signed_in.status_code == 303
        listed = await app.client.get("/ops/records", params={"reason": "rate_limited"})
        summary = await app.client.get("/ops/api/summary")
        # The fallen message's page: what LLM#1 found (its summary masked) and the fallback.
        link = re.search(
            rf'href="([^"]+)"><code>{message_ref(fallen["message_id"])}</code>', listed.text
        )
        assert link
        page = (await app.client.get(link.group(1))).text

    results = fallen["results"]
    assert f'<span id="llm1-event">{results["event"]}</span>' in page
    assert f'<span id="llm1-confidence">{results["confidence"]:.2f}</span>' in page
    assert f'<span id="llm1-summary">{escape(results["summary"])}</span>' in page
    assert '<span id="fallback-detail-reason">rate_limited</span>' in page
    assert '<span id="fallback-step">llm2</span>' in page
    assert "the template <code>" in page
    assert fallen["outbound_message_id"] not in page
    assert f'<code id="sent-ref">{message_ref(fallen["outbound_message_id"])}</code>' in page

    assert fallen["fallback_reason"] == "rate_limited"
    assert listed.status_code == 200
    assert message_ref(fallen["message_id"]) in listed.text
    assert message_ref(on_llm["message_id"]) not in listed.text
    assert summary.status_code == 200
    assert summary.json()["counts"]["sent"] == 2
    assert summary.json()["taken"]["llm1>fallback"] == 1


async def test_a_voice_note_over_metas_size_limit_falls_back_without_a_download(
    open_graph_app: OpenApp, graph: FakeGraph, fake_openai: FakeOpenAI
) -> None:
    """A voice note Graph says is over 16 MB is never downloaded nor sent to the LLM: the
    record falls back as `media_too_large` to the audio template, in the business's voice."""
    graph.add_media("4102", voice_note(), VOICE, file_size=17 * 1024 * 1024)
    message = {
        "from": SENDER,
        "id": new_wamid(),
        "timestamp": now_stamp(),
        "type": "audio",
        "audio": {"mime_type": VOICE, "id": "4102", "voice": True},
    }
    async with open_graph_app(WHATSAPP_PACING_SECONDS="0") as app:
        assert (await app.post(envelope([message]))).status_code == 200
        view = await app.wait_for(message["id"])

    assert trajectory(view) == FALLBACK_PATH
    assert view["fallback_reason"] == "media_too_large"
    assert graph.media_requests("4102", "download") == 0
    assert fake_openai.requests == []
    (send,) = graph.sends_for(message["id"])
    assert BUSINESS_NAME in send.body["text"]["body"]
