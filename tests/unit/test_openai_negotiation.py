"""The adapter on servers that are not OpenAI: each structured-output mode's request and
parsing, `auto` stepping down on a refusal of the format, a refused temperature dropped, and
what is never a reason to step down. The real SDK talks to the fake server in its provider
profiles (`llamacpp`, `gpt5`, `prose`)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import openai
import pytest

from pyloto_corp.adapters.openai_llm import (
    OpenAIAssistant,
    StructuredOutput,
    create_client,
    refuses_format,
    refuses_temperature,
)
from pyloto_corp.ai.prompts import BusinessProfile
from pyloto_corp.ai.schemas import EventDetection, ReplyDraft
from pyloto_corp.ai.structured import instruction, strict_schema
from pyloto_corp.application.ports import LLMFailure
from pyloto_corp.devtools.fake_openai import (
    DEFAULTS,
    DRAFT,
    EVENT,
    IMAGE,
    FakeOpenAI,
    error,
    format_refusal,
    json_answer,
)
from tests.support.media_files import png

pytestmark = pytest.mark.anyio

BUSINESS = BusinessProfile("Barbearia Navalha", "9h às 19h", "Corte: R$ 50.", None)
LOGGER = "pyloto_corp.adapters.openai_llm"

OpenAssistant = Callable[..., Any]


@pytest.fixture
def open_assistant(fake_openai: FakeOpenAI) -> OpenAssistant:
    """`async with open_assistant(structured_output=..., temperature=...) as assistant`:
    the adapter on the fake server, 2 s deadline, no SDK retries."""

    @asynccontextmanager
    async def open_with(
        structured_output: StructuredOutput = "auto", **options: Any
    ) -> AsyncIterator[OpenAIAssistant]:
        built = OpenAIAssistant(
            create_client("sk-test", fake_openai.base_url, 2.0, 0),
            "local-model",
            2.0,
            BUSINESS,
            structured_output=structured_output,
            **options,
        )
        try:
            yield built
        finally:
            await built.close()

    return open_with


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The adapter's WARNING lines."""
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelname == "WARNING"]


async def test_json_object_mode_asks_with_the_schema_beside_the_format_and_in_the_prompt(
    open_assistant: OpenAssistant, fake_openai: FakeOpenAI
) -> None:
    """OPENAI_STRUCTURED_OUTPUT=json_object: llama.cpp's `{"type": "json_object",
    "schema": ...}` and the schema closing the system prompt; the answer parses."""
    fake_openai.profile = "llamacpp"
    async with open_assistant("json_object") as assistant:
        detected = await assistant.detect_event("Quanto custa?", "text")
    assert detected.value == EventDetection.model_validate(DEFAULTS[EVENT])
    (request,) = fake_openai.requests
    assert request["response_format"] == {
        "type": "json_object",
        "schema": strict_schema(EventDetection),
    }
    assert request["messages"][0]["content"].endswith(instruction(EventDetection))
    assert "Quanto custa?" in request["messages"][-1]["content"]
    assert assistant.mode == "json_object"


async def test_prompt_mode_sends_no_format_and_reads_the_object_out_of_prose(
    open_assistant: OpenAssistant, fake_openai: FakeOpenAI
) -> None:
    """OPENAI_STRUCTURED_OUTPUT=prompt: no `response_format`, the schema in the system prompt;
    an answer wrapped in prose and a ```json fence validates with the same model."""
    fake_openai.profile = "prose"
    async with open_assistant("prompt") as assistant:
        drafted = await assistant.draft_reply("Quanto custa?", "price", "Preço.", [])
    assert drafted.value == ReplyDraft.model_validate(DEFAULTS[DRAFT])
    (request,) = fake_openai.requests
    assert "response_format" not in request
    assert request["messages"][0]["content"].endswith(instruction(ReplyDraft))


async def test_json_schema_mode_is_strict_and_sends_no_temperature_unless_configured(
    open_assistant: OpenAssistant, fake_openai: FakeOpenAI
) -> None:
    """The default ask: strict json_schema by the schema's name, the prompt unchanged, and no
    temperature when OPENAI_TEMPERATURE is unset."""
    async with open_assistant("json_schema") as assistant:
        await assistant.detect_event("Quanto custa?", "text")
    (request,) = fake_openai.requests
    assert request["response_format"]["json_schema"]["strict"] is True
    assert request["response_format"]["json_schema"]["schema"] == strict_schema(EventDetection)
    assert "JSON Schema" not in request["messages"][0]["content"]
    assert "temperature" not in request


async def test_auto_steps_down_once_on_llamacpps_refusal_and_remembers_it(
    open_assistant: OpenAssistant, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    """llama.cpp answers json_schema with a 500 naming response_format: the same call is asked
    again at once as json_object and succeeds; the next call asks json_object straight away;
    one WARNING line names the mode, and nothing of the conversation."""
    fake_openai.profile = "llamacpp"
    caplog.set_level(logging.WARNING, logger=LOGGER)
    async with open_assistant() as assistant:
        detected = await assistant.detect_event("Meu CPF é 123.456.789-09", "text")
        drafted = await assistant.draft_reply("Quanto custa?", "price", "Preço.", [])
    assert detected.value.event == "price"
    assert drafted.value.text == DEFAULTS[DRAFT]["text"]
    kinds = [r.get("response_format", {}).get("type") for r in fake_openai.requests]
    assert kinds == ["json_schema", "json_object", "json_object"]
    assert assistant.mode == "json_object"
    (line,) = warnings_of(caplog)
    assert "json_object" in line
    assert "CPF" not in line
    assert "123" not in line


async def test_auto_steps_down_to_prompt_when_json_object_is_refused_too(
    open_assistant: OpenAssistant, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    """Two refusals naming `response_format`, then an answer: the call lands in prompt mode,
    with one WARNING line for the mode it settled on, and stays there."""
    fake_openai.queue(EVENT, format_refusal(), format_refusal())
    caplog.set_level(logging.WARNING, logger=LOGGER)
    async with open_assistant() as assistant:
        first = await assistant.detect_event("Oi", "text")
        await assistant.detect_event("Oi", "text")
    assert first.value.event == "price"
    kinds = [r.get("response_format", {}).get("type") for r in fake_openai.requests]
    assert kinds == ["json_schema", "json_object", None, None]
    assert assistant.mode == "prompt"
    (line,) = warnings_of(caplog)
    assert "use prompt" in line


async def test_a_refusal_in_prompt_mode_leaves_nothing_weaker(
    open_assistant: OpenAssistant, fake_openai: FakeOpenAI
) -> None:
    """A server refusing even the plain ask: three requests, then an api_error."""
    fake_openai.queue(EVENT, format_refusal(), format_refusal(), format_refusal())
    async with open_assistant() as assistant:
        with pytest.raises(LLMFailure) as caught:
            await assistant.detect_event("Oi", "text")
    assert str(caught.value) == "api_error: HTTP 400: the structured-output format was refused"
    assert len(fake_openai.requests) == 3


async def test_a_fixed_mode_never_steps_down_and_says_the_format_was_refused(
    open_assistant: OpenAssistant, fake_openai: FakeOpenAI
) -> None:
    """OPENAI_STRUCTURED_OUTPUT=json_schema on llama.cpp: one refusal, an api_error that says
    why, and the mode left as configured."""
    fake_openai.profile = "llamacpp"
    async with open_assistant("json_schema") as assistant:
        with pytest.raises(LLMFailure) as caught:
            await assistant.detect_event("Oi", "text")
    assert str(caught.value) == "api_error: HTTP 500: the structured-output format was refused"
    assert len(fake_openai.requests) == 1
    assert assistant.mode == "json_schema"


async def test_invalid_output_and_server_errors_are_never_a_reason_to_step_down(
    open_assistant: OpenAssistant, fake_openai: FakeOpenAI
) -> None:
    """An answer that fails validation is `invalid_output`, a 500 that names no format is
    `api_error`: each after one request, the mode still json_schema."""
    fake_openai.queue(EVENT, json_answer({"event": "weather"}), error(500))
    async with open_assistant() as assistant:
        with pytest.raises(LLMFailure) as invalid:
            await assistant.detect_event("Oi", "text")
        with pytest.raises(LLMFailure) as failed:
            await assistant.detect_event("Oi", "text")
        assert assistant.mode == "json_schema"
    assert invalid.value.reason == "invalid_output"
    assert str(failed.value) == "api_error: HTTP 500"
    assert len(fake_openai.requests) == 2


async def test_a_refused_temperature_is_dropped_once_for_the_process(
    open_assistant: OpenAssistant, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    """gpt-5 refuses temperature 0.2 with a 400 naming the param: the call is asked again at
    once without it, the next call sends none, and one WARNING line says so."""
    fake_openai.profile = "gpt5"
    caplog.set_level(logging.WARNING, logger=LOGGER)
    async with open_assistant(temperature=0.2) as assistant:
        await assistant.detect_event("Oi", "text")
        await assistant.draft_reply("Oi", "greeting", "Saudação.", [])
    assert [r.get("temperature") for r in fake_openai.requests] == [0.2, None, None]
    assert assistant.temperature is None
    assert assistant.mode == "json_schema"
    (line,) = warnings_of(caplog)
    assert "temperature" in line


async def test_a_configured_temperature_is_sent_where_it_is_accepted(
    open_assistant: OpenAssistant, fake_openai: FakeOpenAI
) -> None:
    """OPENAI_TEMPERATURE reaches every chat step; gpt-5 takes its default, 1."""
    fake_openai.profile = "gpt5"
    async with open_assistant(temperature=1.0) as assistant:
        await assistant.detect_event("Oi", "text")
    assert [r["temperature"] for r in fake_openai.requests] == [1.0]


async def test_a_refused_temperature_is_dropped_in_a_fixed_mode_too(
    open_assistant: OpenAssistant, fake_openai: FakeOpenAI
) -> None:
    """Dropping a refused temperature does not depend on OPENAI_STRUCTURED_OUTPUT=auto."""
    fake_openai.profile = "gpt5"
    async with open_assistant("json_object", temperature=0.2) as assistant:
        result = await assistant.detect_event("Oi", "text")
    assert result.value.event == "price"
    assert [r.get("temperature") for r in fake_openai.requests] == [0.2, None]


async def test_pictures_are_described_by_the_vision_model(
    open_assistant: OpenAssistant, fake_openai: FakeOpenAI
) -> None:
    """OPENAI_VISION_MODEL names the model of the image description; the chat steps keep
    OPENAI_MODEL."""
    async with open_assistant(vision_model="local-vision") as assistant:
        described = await assistant.describe_image(png(), "image/png", "")
        await assistant.detect_event("Oi", "text")
    assert described.value == DEFAULTS[IMAGE]["description"]
    assert [r["model"] for r in fake_openai.requests] == ["local-vision", "local-model"]


REQUEST = httpx2.Request("POST", "http://127.0.0.1:1/v1/chat/completions")


def status_error(status: int, error: dict[str, Any]) -> openai.APIStatusError:
    """The SDK's error for an answer with `status` and this error object, as its client builds
    one: the message after the status, the error object as the body."""
    response = httpx2.Response(status, json={"error": error}, request=REQUEST)
    message = f"Error code: {status} - {error['message']}"
    return openai.APIStatusError(message, response=response, body=error)


@pytest.mark.parametrize(
    ("status", "error_", "format_refused", "temperature_refused"),
    [
        (
            500,
            {
                "message": "1 validation error: {'loc': ('body', 'response_format', 'type'), "
                "'msg': \"Input should be 'text' or 'json_object'\"}",
                "type": "server_error",
            },
            True,
            False,
        ),
        (
            400,
            {
                "message": "Invalid schema for response_format 'MessageChoice'",
                "param": "response_format",
                "code": "invalid_value",
            },
            True,
            False,
        ),
        (
            400,
            {
                "message": 'Invalid JSON payload received. Unknown name "title" at '
                "'generation_config.response_schema.properties[0].value': Cannot find field."
            },
            True,
            False,
        ),
        (422, {"message": "json_schema is not supported"}, True, False),
        (
            400,
            {
                "message": "Unsupported value: 'temperature' does not support 0.2 with this "
                "model. Only the default (1) value is supported.",
                "param": "temperature",
                "code": "unsupported_value",
            },
            False,
            True,
        ),
        (500, {"message": "The server had an error while processing your request."}, False, False),
        (503, {"message": "response_format backend overloaded"}, False, False),
        (401, {"message": "Incorrect API key provided", "code": "invalid_api_key"}, False, False),
    ],
    ids=[
        "llamacpp",
        "openai-schema",
        "gemini-schema",
        "422",
        "gpt5-temperature",
        "plain-500",
        "503",
        "401",
    ],
)
def test_what_counts_as_a_refusal_of_the_format_or_the_temperature(
    status: int, error_: dict[str, Any], format_refused: bool, temperature_refused: bool
) -> None:
    """Only a 400/422/500 naming the format steps `auto` down, and only a 400/422 naming the
    temperature drops it; other errors are the API errors they always were."""
    built = status_error(status, error_)
    assert refuses_format(built) is format_refused
    assert refuses_temperature(built) is temperature_refused
