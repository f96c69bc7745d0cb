"""OpenAI-compatible servers that are not OpenAI, end to end: with OPENAI_STRUCTURED_OUTPUT=auto
a signed text message runs LLM#1-3 on the real `openai` SDK to `sent`, with no fallback,
whether the server refuses `json_schema` (llama.cpp), refuses a temperature (gpt-5) or ignores
`response_format` and wraps the JSON in prose.

The SDK is pointed by OPENAI_BASE_URL at the fake server in the provider's profile, as
tests/e2e/test_llm_pipeline.py does for OpenAI's own behaviour.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from pyloto_corp.bootstrap import bootstrap
from pyloto_corp.config import Settings
from pyloto_corp.devtools.fake_openai import CHOICE, DEFAULTS, DRAFT, EVENT, FakeOpenAI, Profile
from pyloto_corp.http.app import create_app
from tests.e2e.support import LLM_PATH, Pyloto, trajectory
from tests.support.helpers import envelope, text_message

pytestmark = pytest.mark.anyio

TEXT = "Quanto custa o corte de cabelo?"
OpenApp = Callable[..., AbstractAsyncContextManager[Pyloto]]


@pytest.fixture
def open_app(make_settings: Callable[..., Settings], fake_openai: FakeOpenAI) -> OpenApp:
    """Start the app with the LLM on the fake server in `profile`, negotiating (auto) and
    asking temperature 0.2: `async with open_app("llamacpp") as app`."""

    @asynccontextmanager
    async def open_with(profile: Profile, **overrides: str) -> AsyncIterator[Pyloto]:
        fake_openai.profile = profile
        variables = {
            "OPENAI_API_KEY": "sk-test",
            "OPENAI_BASE_URL": fake_openai.base_url,
            "OPENAI_TIMEOUT_SECONDS": "5",
            "OPENAI_MAX_RETRIES": "0",
            "OPENAI_STRUCTURED_OUTPUT": "auto",
            "OPENAI_TEMPERATURE": "0.2",
            "BUSINESS_NAME": "Barbearia Navalha",
            **overrides,
        }
        app = create_app(bootstrap(make_settings(**variables)))
        async with AsyncTestClient(app=app) as client:
            yield Pyloto(client)

    return open_with


async def send_and_wait(app: Pyloto, text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Post one signed text message and wait for it to be sent: (record view, Graph API body)."""
    message = text_message(text)
    response = await app.post(envelope([message]))
    assert response.status_code == 200, response.text
    view = await app.wait_for(message["id"])
    assert view["state"] == "sent", view
    (body,) = await app.sent_for(message["id"])
    return view, body


def assert_llm_reply(view: dict[str, Any], body: dict[str, Any]) -> None:
    """The record went the LLM path with no fallback, and LLM#3's buttons went out."""
    assert trajectory(view) == LLM_PATH
    assert view["fallback_reason"] is None
    assert view["results"]["event"] == DEFAULTS[EVENT]["event"]
    assert view["results"]["message_type"] == "buttons"
    assert body["type"] == "interactive"
    assert body["interactive"]["body"]["text"] == DEFAULTS[DRAFT]["text"]
    titles = [b["reply"]["title"] for b in body["interactive"]["action"]["buttons"]]
    assert titles == [b["title"] for b in DEFAULTS[CHOICE]["buttons"]]


def formats(fake_openai: FakeOpenAI) -> list[str | None]:
    """The `response_format` type of every chat request, in order (None: none sent)."""
    return [(r.get("response_format") or {}).get("type") for r in fake_openai.requests]


def warnings(log_lines: io.StringIO, event: str) -> list[dict[str, Any]]:
    """The WARNING log entries of `event`."""
    entries = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    return [e for e in entries if e.get("event") == event and e["severity"] == "WARNING"]


async def test_on_openai_every_step_is_strict_json_schema_with_the_temperature(
    open_app: OpenApp, fake_openai: FakeOpenAI, log_lines: io.StringIO
) -> None:
    """OpenAI's own behaviour: three strict requests, each with the configured temperature,
    and nothing to negotiate (no WARNING)."""
    async with open_app("openai") as app:
        view, body = await send_and_wait(app, TEXT)
    assert_llm_reply(view, body)
    assert formats(fake_openai) == ["json_schema"] * 3
    assert [r["temperature"] for r in fake_openai.requests] == [0.2] * 3
    assert warnings(log_lines, "llm_structured_output_settled") == []
    assert warnings(log_lines, "llm_temperature_dropped") == []


async def test_on_llamacpp_auto_settles_on_json_object_and_sends_the_llm_reply(
    open_app: OpenApp, fake_openai: FakeOpenAI, log_lines: io.StringIO
) -> None:
    """llama.cpp's 500 to json_schema: LLM#1 is asked again at once as json_object with the
    schema; LLM#2, LLM#3 and the next message ask json_object straight away; one WARNING line
    names the mode, and none carries the customer's text."""
    async with open_app("llamacpp") as app:
        view, body = await send_and_wait(app, TEXT)
        second, _ = await send_and_wait(app, "E a barba?")
    assert_llm_reply(view, body)
    assert trajectory(second) == LLM_PATH
    assert formats(fake_openai) == ["json_schema"] + ["json_object"] * 6
    for request in fake_openai.requests[1:]:
        assert request["response_format"]["schema"]["additionalProperties"] is False
        assert "JSON Schema" in request["messages"][0]["content"]
    (settled,) = warnings(log_lines, "llm_structured_output_settled")
    assert settled["mode"] == "json_object"
    for line in log_lines.getvalue().splitlines():
        assert "corte de cabelo" not in line
        assert "barba" not in line


async def test_on_gpt5_the_refused_temperature_is_dropped_and_the_llm_reply_sent(
    open_app: OpenApp, fake_openai: FakeOpenAI, log_lines: io.StringIO
) -> None:
    """gpt-5's 400 to temperature 0.2: LLM#1 is asked again at once without it; LLM#2 and
    LLM#3 send none; the format stays strict; one WARNING line."""
    async with open_app("gpt5") as app:
        view, body = await send_and_wait(app, TEXT)
    assert_llm_reply(view, body)
    assert [r.get("temperature") for r in fake_openai.requests] == [0.2, None, None, None]
    assert formats(fake_openai) == ["json_schema"] * 4
    assert len(warnings(log_lines, "llm_temperature_dropped")) == 1


async def test_on_a_server_that_answers_in_prose_the_object_is_read_out_and_sent(
    open_app: OpenApp, fake_openai: FakeOpenAI
) -> None:
    """A server that takes json_schema without enforcing it, answering in prose around a
    ```json fence: every step's object is read out of the prose; one request per step."""
    async with open_app("prose") as app:
        view, body = await send_and_wait(app, TEXT)
    assert_llm_reply(view, body)
    assert formats(fake_openai) == ["json_schema"] * 3


async def test_on_prose_in_prompt_mode_no_response_format_is_sent(
    open_app: OpenApp, fake_openai: FakeOpenAI
) -> None:
    """OPENAI_STRUCTURED_OUTPUT=prompt: the schema rides in the system prompt only, and the
    prose answers still make the LLM reply."""
    async with open_app("prose", OPENAI_STRUCTURED_OUTPUT="prompt") as app:
        view, body = await send_and_wait(app, TEXT)
    assert_llm_reply(view, body)
    assert formats(fake_openai) == [None] * 3
    for request in fake_openai.requests:
        assert "JSON Schema" in request["messages"][0]["content"]
