"""The OpenAI adapter: the real SDK against the local fake server, and every failure's reason.

`_failure` is given the SDK's own exception objects; the rest goes over HTTP to the server of
`pyloto fake-openai`, so what is tested is what the SDK really raises or returns.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2
import openai
import pydantic
import pytest
from openai.types.chat import ChatCompletion

from pyloto_corp.adapters.openai_llm import OpenAIAssistant, _failure, create_client
from pyloto_corp.ai.prompts import BusinessProfile
from pyloto_corp.ai.schemas import EventDetection
from pyloto_corp.application.ports import LLMFailure
from pyloto_corp.devtools.fake_openai import (
    CHOICE,
    DEFAULTS,
    DRAFT,
    EVENT,
    Answer,
    FakeOpenAI,
    error,
    json_answer,
    raw_answer,
    refusal,
)
from pyloto_corp.domain.records import Turn
from tests.support.redis_server import free_port

BUSINESS = BusinessProfile("Barbearia Navalha", "9h às 19h", "Corte: R$ 50.", None)
REQUEST = httpx2.Request("POST", "http://127.0.0.1:1/v1/chat/completions")


def response(status: int) -> httpx2.Response:
    """An API response with `status` to the chat completions request."""
    return httpx2.Response(status, request=REQUEST)


def completion(finish_reason: str) -> ChatCompletion:
    """A chat completion as the SDK hands it to its finish-reason errors."""
    return ChatCompletion.model_validate(
        {
            "id": "chatcmpl-x",
            "object": "chat.completion",
            "created": 0,
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": finish_reason,
                    "message": {"role": "assistant", "content": "{"},
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }
    )


def validation_error(raw: str) -> pydantic.ValidationError:
    """The error the SDK's parse raises for this structured output."""
    with pytest.raises(pydantic.ValidationError) as caught:
        EventDetection.model_validate_json(raw)
    return caught.value


@pytest.mark.parametrize(
    ("error_", "reason", "detail"),
    [
        (TimeoutError(), "timeout", "no answer within 2.5 s"),
        (openai.APITimeoutError(request=REQUEST), "timeout", "no answer within 2.5 s"),
        (
            openai.RateLimitError("slow down", response=response(429), body=None),
            "rate_limited",
            "429 from the API",
        ),
        (
            openai.InternalServerError("boom", response=response(500), body=None),
            "api_error",
            "HTTP 500",
        ),
        (
            openai.AuthenticationError("bad key", response=response(401), body=None),
            "api_error",
            "HTTP 401",
        ),
        (
            openai.BadRequestError(
                "rejected", response=response(400), body={"code": "content_policy_violation"}
            ),
            "refusal",
            "content policy (HTTP 400)",
        ),
        (openai.APIConnectionError(request=REQUEST), "api_error", "connection failed"),
        (validation_error('{"event": "price", "conf'), "unparsable", "1 schema error(s)"),
        (
            validation_error('{"event": "weather", "confidence": 7, "summary": "x"}'),
            "invalid_output",
            "2 schema error(s)",
        ),
        (ValueError("odd"), "unparsable", "ValueError"),
    ],
    ids=[
        "asyncio-timeout",
        "sdk-timeout",
        "429",
        "500",
        "401",
        "content-policy",
        "connection",
        "broken-json",
        "wrong-values",
        "other",
    ],
)
def test_each_exception_maps_to_its_fallback_reason(
    error_: Exception, reason: str, detail: str
) -> None:
    """Every exception a call can raise becomes LLMFailure with the reason the record keeps;
    the detail never quotes the model's output."""
    failure = _failure(error_, 2.5)
    assert isinstance(failure, LLMFailure)
    assert failure.reason == reason
    assert str(failure) == f"{reason}: {detail}"


@pytest.mark.anyio
async def test_the_client_is_configured_from_its_arguments() -> None:
    """Key, base URL, timeout and retry budget reach the SDK client; nothing is sent."""
    client = create_client("sk-test", "http://127.0.0.1:9/v1", 3.0, 2)
    assert client.api_key == "sk-test"
    assert str(client.base_url) == "http://127.0.0.1:9/v1/"
    assert client.timeout == 3.0
    assert client.max_retries == 2
    await client.close()


@pytest.fixture
async def assistant(fake_openai: FakeOpenAI) -> AsyncIterator[OpenAIAssistant]:
    """The adapter on the fake server: 2 s deadline, no SDK retries."""
    built = OpenAIAssistant(
        create_client("sk-test", fake_openai.base_url, 2.0, 0), "gpt-4o-mini", 2.0, BUSINESS
    )
    yield built
    await built.close()


@pytest.mark.anyio
async def test_a_structured_answer_comes_back_with_its_cost(
    assistant: OpenAIAssistant, fake_openai: FakeOpenAI
) -> None:
    """Each step asks for its own schema with the configured model and gets the parsed value,
    the tokens the API reported, its model and a latency."""
    detected = await assistant.detect_event("Quanto custa?", "text")
    assert detected.value == EventDetection.model_validate(DEFAULTS[EVENT])
    assert (detected.input_tokens, detected.output_tokens) == (120, 40)
    assert detected.model == "gpt-4o-mini"
    assert detected.latency_ms >= 0
    drafted = await assistant.draft_reply(
        "Quanto custa?", "price", "Preço.", [Turn("customer", "Oi")]
    )
    assert drafted.value.text == DEFAULTS[DRAFT]["text"]
    chosen = await assistant.choose_message_type(drafted.value.text, "price")
    assert chosen.value.type == "buttons"
    (first, second, third) = fake_openai.requests
    assert [first["model"], second["model"], third["model"]] == ["gpt-4o-mini"] * 3
    assert first["response_format"]["json_schema"]["strict"] is True
    assert second["messages"][1] == {"role": "user", "content": "Oi"}
    assert [r["response_format"]["json_schema"]["name"] for r in fake_openai.requests] == [
        EVENT,
        DRAFT,
        CHOICE,
    ]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("answer", "reason", "tokens"),
    [
        (refusal(), "refusal", (120, 40)),
        (Answer(content=None), "unparsable", (120, 40)),
        (raw_answer("not json at all"), "unparsable", (0, 0)),
        (json_answer({"event": "price"}), "invalid_output", (0, 0)),
        (Answer(content=DEFAULTS[EVENT], finish_reason="length"), "unparsable", (120, 40)),
        (Answer(content=DEFAULTS[EVENT], finish_reason="content_filter"), "refusal", (120, 40)),
        (error(429), "rate_limited", (0, 0)),
        (error(400), "api_error", (0, 0)),
        (error(503), "api_error", (0, 0)),
    ],
    ids=[
        "refusal",
        "no-content",
        "not-json",
        "missing-fields",
        "length",
        "content-filter",
        "429",
        "400",
        "503",
    ],
)
async def test_bad_answers_from_the_server_become_failures(
    assistant: OpenAIAssistant,
    fake_openai: FakeOpenAI,
    answer: Answer,
    reason: str,
    tokens: tuple[int, int],
) -> None:
    """What the server answers wrongly raises LLMFailure with its reason; when the API did
    answer with a completion (a refusal, no content, cut short or filtered) the tokens it
    cost are kept."""
    fake_openai.queue(EVENT, answer)
    with pytest.raises(LLMFailure) as caught:
        await assistant.detect_event("Oi", "text")
    assert caught.value.reason == reason
    assert (caught.value.input_tokens, caught.value.output_tokens) == tokens


@pytest.mark.anyio
async def test_a_slow_server_times_out_within_the_deadline(fake_openai: FakeOpenAI) -> None:
    """An answer later than the deadline is a `timeout`, whatever the SDK's own retries."""
    slow = OpenAIAssistant(
        create_client("sk-test", fake_openai.base_url, 0.3, 3), "gpt-4o-mini", 0.3, BUSINESS
    )
    fake_openai.always(EVENT, json_answer(DEFAULTS[EVENT], delay=1.0))
    try:
        with pytest.raises(LLMFailure) as caught:
            await slow.detect_event("Oi", "text")
    finally:
        await slow.close()
    assert caught.value.reason == "timeout"
    assert str(caught.value) == "timeout: no answer within 0.3 s"


@pytest.mark.anyio
async def test_an_unreachable_server_is_an_api_error() -> None:
    """Nothing listening at the base URL: `api_error` (connection failed)."""
    port = free_port()  # nothing listens there
    nowhere = OpenAIAssistant(
        create_client("sk-test", f"http://127.0.0.1:{port}/v1", 2.0, 0), "m", 2.0, BUSINESS
    )
    try:
        with pytest.raises(LLMFailure) as caught:
            await nowhere.detect_event("Oi", "text")
    finally:
        await nowhere.close()
    assert str(caught.value) == "api_error: connection failed"


@pytest.mark.anyio
async def test_a_call_names_the_model_it_asked_for_beside_the_one_that_answered(
    assistant: OpenAIAssistant, fake_openai: FakeOpenAI
) -> None:
    """An answer naming a dated snapshot keeps that name as `model` and the configured one
    as `requested_model`; a failed call names the configured one too, so the console counts
    both under one model."""
    fake_openai.queue(EVENT, Answer(content=DEFAULTS[EVENT], model="gpt-4o-mini-2024-07-18"))
    detected = await assistant.detect_event("Quanto custa?", "text")
    assert (detected.model, detected.requested_model) == ("gpt-4o-mini-2024-07-18", "gpt-4o-mini")
    fake_openai.queue(EVENT, refusal())
    with pytest.raises(LLMFailure) as caught:
        await assistant.detect_event("Quanto custa?", "text")
    assert (caught.value.reason, caught.value.model) == ("refusal", "gpt-4o-mini")
