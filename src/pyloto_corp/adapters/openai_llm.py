"""The three LLM steps and the media step on the `openai` SDK: structured outputs (and voice
note transcriptions) under one deadline per call.

Every failure becomes LLMFailure with a reason the record keeps (timeout, rate_limited,
api_error, refusal, unparsable, invalid_output, empty_transcript); the step then falls back
at once.

What an OpenAI-compatible server accepts is negotiated, not assumed: with
OPENAI_STRUCTURED_OUTPUT=auto a server that refuses the structured-output format itself is
asked again at once one mode down (json_schema, json_object, prompt: see `ai.structured`),
and a server that refuses the temperature is asked again without it; what worked is kept for
the process, with one WARNING line each. A model's answer that fails validation is never a
reason to step down: it is `invalid_output`, as from any server.

The SDK keeps what it is good at (base URL, auth headers, retries, its error classes) but
neither its HTTP stack nor its response models: requests go through `PooledTransport` (the
small keep-alive client of `http_pool`), and the answer's bytes are decoded by msgspec into
the few fields a step reads, then the content by pydantic into the step's schema.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal, TypeVar

import httpx2
import msgspec
import openai
import pydantic
from openai import AsyncOpenAI
from opentelemetry.trace import SpanKind

from pyloto_corp.adapters.http_pool import (
    ConnectFailed,
    HttpPool,
    Origin,
    ResponseFailed,
    ResponseTimeout,
    default_ssl_context,
)
from pyloto_corp.ai import prompts
from pyloto_corp.ai.prompts import BusinessProfile
from pyloto_corp.ai.schemas import EventDetection, ImageDescription, MessageChoice, ReplyDraft
from pyloto_corp.ai.structured import Mode, json_text, request_fields, weaker
from pyloto_corp.application.ports import LLMFailure, LLMResult
from pyloto_corp.domain.records import Turn
from pyloto_corp.observability.instruments import Telemetry, mark_failed

T = TypeVar("T", bound=pydantic.BaseModel)
R = TypeVar("R")

log = logging.getLogger(__name__)

# OPENAI_STRUCTURED_OUTPUT: a mode, or `auto` (start strict, step down on the server's refusal).
StructuredOutput = Mode | Literal["auto"]

# The default model of voice note transcriptions (OPENAI_TRANSCRIPTION_MODEL).
TRANSCRIPTION_MODEL = "gpt-4o-mini-transcribe"
# The metric and span label of both media calls (transcription, image description).
MEDIA_STEP = "media"


# Connections to the API at most open at once (each waits for a completion of ~1 s).
MAX_CONNECTIONS = 100


def create_client(
    api_key: str, base_url: str | None, timeout_seconds: float, max_retries: int
) -> AsyncOpenAI:
    """The SDK client (built once, in bootstrap), with a small retry budget, on the pooled
    transport."""
    connect = min(timeout_seconds, 5.0)
    http_client = httpx2.AsyncClient(
        transport=PooledTransport(connect_timeout=connect, max_connections=MAX_CONNECTIONS),
        timeout=httpx2.Timeout(timeout_seconds, connect=connect),
        follow_redirects=True,
    )
    return AsyncOpenAI(
        api_key=api_key,
        base_url=base_url,
        timeout=timeout_seconds,
        max_retries=max_retries,
        http_client=http_client,
    )


class PooledTransport(httpx2.AsyncBaseTransport):
    """An httpx2 transport on `HttpPool`, one pool per origin: what the SDK's client sends
    goes out as it built it, the answer comes back whole.

    Failures keep httpx2's meaning, so the SDK retries and classifies them as it always has:
    no connection is `ConnectError` (or `ConnectTimeout`), a late answer `ReadTimeout`, a
    connection lost mid-answer `RemoteProtocolError`.
    """

    def __init__(
        self,
        *,
        connect_timeout: float,
        max_connections: int,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        # Built once, when bootstrap builds the client: an unreadable SSL_CERT_FILE stops the
        # start instead of failing each call.
        self.ssl_context = ssl_context or default_ssl_context()
        self._pools: dict[tuple[str, str, int | None], HttpPool] = {}

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        key = (url.scheme, url.host, url.port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = HttpPool(
                Origin.of(str(url)),
                connect_timeout=self.connect_timeout,
                read_timeout=None,
                max_connections=self.max_connections,
                ssl_context=self.ssl_context,
            )
        body = await request.aread()
        timeout = request.extensions.get("timeout") or {}
        try:
            answer = await pool.request(
                _head(request, len(body)), body, read_timeout=timeout.get("read")
            )
        except ConnectFailed as error:
            if error.timed_out:
                raise httpx2.ConnectTimeout(str(error), request=request) from error
            raise httpx2.ConnectError(str(error), request=request) from error
        except ResponseTimeout as error:
            raise httpx2.ReadTimeout(str(error), request=request) from error
        except ResponseFailed as error:
            raise httpx2.RemoteProtocolError(str(error), request=request) from error
        return httpx2.Response(
            answer.status,
            headers=answer.headers,
            stream=httpx2.ByteStream(answer.body),
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()
        self._pools.clear()


# Headers the transport writes itself: the body is whole (never chunked), each connection is
# kept alive, and answers come uncompressed (a completion is ~1 kB: gzip costs more CPU than
# it saves on the wire).
_OWN_HEADERS = frozenset(
    {b"content-length", b"transfer-encoding", b"connection", b"accept-encoding"}
)


def _head(request: httpx2.Request, content_length: int) -> bytes:
    """The request line and headers of `request` as HTTP/1.1 bytes."""
    parts = [request.method.encode("ascii"), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
    for name, value in request.headers.raw:
        if name.lower() not in _OWN_HEADERS:
            parts += (name, b": ", value, b"\r\n")
    parts.append(b"accept-encoding: identity\r\ncontent-length: %d\r\n\r\n" % content_length)
    return b"".join(parts)


class _Message(msgspec.Struct):
    content: str | None = None
    refusal: str | None = None


class _Choice(msgspec.Struct):
    message: _Message
    finish_reason: str | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _Completion(msgspec.Struct):
    """The fields of a chat completion a step reads (the rest of the answer is skipped)."""

    choices: list[_Choice]
    model: str | None = None
    usage: _Usage | None = None


class _TranscriptionUsage(msgspec.Struct):
    input_tokens: int = 0
    output_tokens: int = 0


class _Transcription(msgspec.Struct):
    """The fields of a transcription (`response_format=json`) the media step reads."""

    text: str
    usage: _TranscriptionUsage | None = None


_decode_completion = msgspec.json.Decoder(_Completion).decode
_decode_transcription = msgspec.json.Decoder(_Transcription).decode

# File name extensions of WhatsApp's audio types: the API tells the format by the name.
_AUDIO_EXTENSIONS = {
    "audio/ogg": "ogg",
    "audio/opus": "ogg",
    "audio/mpeg": "mp3",
    "audio/mp4": "m4a",
    "audio/aac": "aac",
    "audio/amr": "amr",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/webm": "webm",
    "audio/flac": "flac",
}
_encode = msgspec.json.Encoder().encode


class OpenAIAssistant:
    """Assistant port on an OpenAI-compatible API: chat completions, audio transcriptions
    (on their own server when `transcription_client` is given)."""

    def __init__(
        self,
        client: AsyncOpenAI,
        model: str,
        timeout_seconds: float,
        business: BusinessProfile,
        telemetry: Telemetry | None = None,
        *,
        transcription_model: str = TRANSCRIPTION_MODEL,
        transcription_client: AsyncOpenAI | None = None,
        vision_model: str | None = None,
        structured_output: StructuredOutput = "auto",
        temperature: float | None = None,
    ) -> None:
        self.client = client
        self.model = model
        self.transcription_client = transcription_client or client
        self.transcription_model = transcription_model
        self.vision_model = vision_model or model
        self.timeout = timeout_seconds
        self.business = business
        self.telemetry = telemetry or Telemetry()
        self.auto = structured_output == "auto"
        # What the next chat completion sends: lowered for the process by a server's refusal.
        self.mode: Mode = "json_schema" if structured_output == "auto" else structured_output
        self.temperature = temperature
        self._announced: Mode = self.mode

    async def transcribe(self, audio: bytes, mime_type: str) -> LLMResult[str]:
        """The media step: a voice note's words, Portuguese hinted; `empty_transcript` when
        the API heard none."""
        return await self._observed(
            "transcription",
            self.transcription_model,
            MEDIA_STEP,
            lambda: self._transcription(audio, mime_type),
        )

    async def describe_image(self, image: bytes, mime_type: str, caption: str) -> LLMResult[str]:
        """The media step: what a picture shows, read with its caption."""
        messages = prompts.describe_image(image, mime_type, caption)
        result = await self._call(MEDIA_STEP, messages, ImageDescription, self.vision_model)
        return LLMResult(
            value=result.value.description,
            latency_ms=result.latency_ms,
            input_tokens=result.input_tokens,
            output_tokens=result.output_tokens,
            model=result.model,
            requested_model=result.requested_model,
        )

    async def detect_event(self, text: str, kind: str) -> LLMResult[EventDetection]:
        """LLM#1."""
        return await self._call("llm1", prompts.detect_event(text, kind), EventDetection)

    async def draft_reply(
        self, text: str, event: str, summary: str, history: Sequence[Turn]
    ) -> LLMResult[ReplyDraft]:
        """LLM#2."""
        messages = prompts.draft_reply(text, event, summary, history, self.business)
        return await self._call("llm2", messages, ReplyDraft)

    async def choose_message_type(self, draft: str, event: str) -> LLMResult[MessageChoice]:
        """LLM#3."""
        messages = prompts.choose_message_type(draft, event, self.business)
        return await self._call("llm3", messages, MessageChoice)

    async def close(self) -> None:
        """Close the SDK's HTTP clients."""
        await self.client.close()
        if self.transcription_client is not self.client:
            await self.transcription_client.close()

    async def _call(
        self,
        step: str,
        messages: Sequence[Mapping[str, Any]],
        schema: type[T],
        model: str | None = None,
    ) -> LLMResult[T]:
        """One chat completion, observed."""
        model = model or self.model
        return await self._observed(
            "chat", model, step, lambda: self._parse(messages, schema, model)
        )

    async def _observed(
        self,
        operation: str,
        model: str,
        step: str,
        call: Callable[[], Awaitable[LLMResult[R]]],
    ) -> LLMResult[R]:
        """One call as a span (gen_ai conventions: model, tokens; never the prompt, the
        media or the answer) and a count by outcome."""
        attributes = {
            "gen_ai.operation.name": operation,
            "gen_ai.system": "openai",
            "gen_ai.request.model": model,
            "pyloto.llm.step": step,
        }
        outcome = "ok"
        with self.telemetry.span(
            f"{operation} {model}", kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            try:
                result = await call()
            except LLMFailure as failure:
                outcome = failure.reason
                failure.model = failure.model or model
                mark_failed(span, failure.reason)
                span.set_attribute("gen_ai.usage.input_tokens", failure.input_tokens)
                span.set_attribute("gen_ai.usage.output_tokens", failure.output_tokens)
                self._count_tokens(step, failure.input_tokens, failure.output_tokens)
                raise
            finally:
                self.telemetry.metrics.llm_calls.add(
                    1, {"pyloto.llm.step": step, "pyloto.outcome": outcome}
                )
            span.set_attribute("gen_ai.response.model", result.model)
            span.set_attribute("gen_ai.usage.input_tokens", result.input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", result.output_tokens)
            span.set_attribute("pyloto.llm.latency_ms", result.latency_ms)
        self._count_tokens(step, result.input_tokens, result.output_tokens)
        return replace(result, requested_model=model)

    def _count_tokens(self, step: str, input_tokens: int, output_tokens: int) -> None:
        """The tokens of one call on `pyloto.llm.tokens` (what the provider bills)."""
        for kind, n in (("input", input_tokens), ("output", output_tokens)):
            if n > 0:
                self.telemetry.metrics.llm_tokens.add(
                    n, {"pyloto.llm.step": step, "pyloto.llm.token_kind": kind}
                )

    async def _transcription(self, audio: bytes, mime_type: str) -> LLMResult[str]:
        started = time.perf_counter()
        media_type = mime_type.split(";", 1)[0].strip().lower()
        extension = _AUDIO_EXTENSIONS.get(media_type, media_type.rpartition("/")[2] or "bin")
        try:
            async with asyncio.timeout(self.timeout):
                # What `audio.transcriptions.create` sends (multipart: the fields and the
                # file), on the SDK's request path; the raw answer, decoded by msgspec.
                response = await self.transcription_client.post(
                    "/audio/transcriptions",
                    cast_to=httpx2.Response,
                    body={
                        "model": self.transcription_model,
                        "language": "pt",
                        "response_format": "json",
                    },
                    files=[("file", (f"voice.{extension}", audio, mime_type))],
                    options={"headers": {"Content-Type": "multipart/form-data"}},
                )
            transcription = _decode_transcription(response.content)
        except (TimeoutError, openai.OpenAIError, msgspec.DecodeError, ValueError) as error:
            raise _failure(error, self.timeout) from None
        usage = transcription.usage
        tokens = {
            "input_tokens": usage.input_tokens if usage else 0,
            "output_tokens": usage.output_tokens if usage else 0,
        }
        text = transcription.text.strip()
        if not text:
            raise LLMFailure("empty_transcript", "no words in the audio", **tokens)
        return LLMResult(
            value=text,
            latency_ms=round((time.perf_counter() - started) * 1000, 1),
            input_tokens=tokens["input_tokens"],
            output_tokens=tokens["output_tokens"],
            model=self.transcription_model,
        )

    async def _parse(
        self, messages: Sequence[Mapping[str, Any]], schema: type[T], model: str
    ) -> LLMResult[T]:
        started = time.perf_counter()
        try:
            # One deadline for the call, its retries and its renegotiation: a slow LLM falls
            # back at once.
            async with asyncio.timeout(self.timeout):
                response = await self._negotiated(messages, schema, model)
            completion = _decode_completion(response.content)
            if not completion.choices:
                raise ValueError("no choices")
            usage = completion.usage
            tokens = {
                "input_tokens": usage.prompt_tokens if usage else 0,
                "output_tokens": usage.completion_tokens if usage else 0,
            }
            parsed = _parsed(completion.choices[0], schema, tokens)
            self._announce()
        except (
            TimeoutError,
            openai.OpenAIError,
            pydantic.ValidationError,
            msgspec.DecodeError,
            ValueError,
        ) as error:
            raise _failure(error, self.timeout) from None
        return LLMResult(
            value=parsed,
            latency_ms=round((time.perf_counter() - started) * 1000, 1),
            input_tokens=tokens["input_tokens"],
            output_tokens=tokens["output_tokens"],
            model=completion.model or model,
        )

    async def _negotiated(
        self, messages: Sequence[Mapping[str, Any]], schema: type[T], model: str
    ) -> httpx2.Response:
        """The raw answer to a chat completion in the process's current mode and temperature,
        asked again at once while the server refuses one of them and a weaker ask is left.
        Each new ask is strictly weaker than the last, so there are at most four."""
        while True:
            mode, temperature = self.mode, self.temperature
            body: dict[str, Any] = {"model": model, **request_fields(messages, schema, mode)}
            if temperature is not None:
                body["temperature"] = temperature
            try:
                # The SDK's own request path (auth, retries, errors), without the per-call
                # work of `completions.parse`: the schema is built once per type, and the
                # messages, plain dicts already, need no transformation. The raw answer: the
                # SDK has checked its status, not decoded its body. Encoded here: the SDK sends
                # content bytes as they are (and copies them for its retries for free), where a
                # dict is deep-copied and JSON-dumped.
                return await self.client.post(
                    "/chat/completions", cast_to=httpx2.Response, content=_encode(body)
                )
            except openai.APIStatusError as error:
                if not self._adapt(error, mode, temperature):
                    raise

    def _adapt(self, error: openai.APIStatusError, mode: Mode, temperature: float | None) -> bool:
        """Whether a refusal of what was sent leaves a weaker ask; lowers the process's
        settings unless another call already did."""
        if temperature is not None and refuses_temperature(error):
            if self.temperature is not None:
                self.temperature = None
                log.warning(
                    "llm_temperature_dropped: the server refused a temperature; none is sent "
                    "from now on",
                    extra={"event": "llm_temperature_dropped"},
                )
            return True
        if not (self.auto and refuses_format(error)):
            return False
        if self.mode != mode:
            return True  # another call stepped down meanwhile: ask as it does now
        lower = weaker(mode)
        if lower is None:
            return False
        self.mode = lower
        return True

    def _announce(self) -> None:
        """One WARNING line when a call first succeeds in a mode `auto` stepped down to."""
        if self.mode == self._announced:
            return
        self._announced = self.mode
        log.warning(
            "llm_structured_output_settled: the server refused a stronger format; the LLM "
            "steps use %s from now on",
            self.mode,
            extra={"event": "llm_structured_output_settled", "mode": self.mode},
        )


def refuses_temperature(error: openai.APIStatusError) -> bool:
    """Whether the API refused the request's temperature, as OpenAI's newer models do to any
    but the default: 400, `param: temperature`, `code: unsupported_value`
    (https://github.com/johny-b/llmcomp/issues/69 quotes the body)."""
    return error.status_code in (400, 422) and (
        error.param == "temperature" or "'temperature'" in error.message
    )


# What an error says when it is about the structured-output format (Gemini names the field
# it maps `response_format` to: "Unknown name ... at 'generation_config.response_schema'",
# https://github.com/QuantumNous/new-api/pull/1037).
_FORMAT_WORDS = ("response_format", "json_schema", "response_schema")


def refuses_format(error: openai.APIStatusError) -> bool:
    """Whether the API refused the request's structured-output format itself: a 400/422/500
    whose error names `response_format` or `json_schema`. llama-cpp-python answers a
    `json_schema` request with its request validation error as a 500, whose message carries
    the field's path ('body', 'response_format', 'type') and "Input should be 'text' or
    'json_object'" (https://github.com/ggml-org/llama.cpp/issues/23463); OpenAI names the
    param `response_format` when it refuses a schema."""
    if error.status_code not in (400, 422, 500):
        return False
    text = f"{error.param or ''} {error.message}".lower()
    return any(word in text for word in _FORMAT_WORDS)


def _parsed(choice: _Choice, schema: type[T], tokens: dict[str, int]) -> T:
    """The structured output of `choice`, or the LLMFailure that explains its absence."""
    if choice.finish_reason == "length":
        raise LLMFailure("unparsable", "output cut at the token limit", **tokens)
    if choice.finish_reason == "content_filter":
        raise LLMFailure("refusal", "content filter", **tokens)
    message = choice.message
    if message.refusal:
        raise LLMFailure("refusal", "the model refused", **tokens)
    if not message.content:
        raise LLMFailure("unparsable", "no structured output", **tokens)
    # Tolerant in every mode: a server may take a format without enforcing it.
    return schema.model_validate_json(json_text(message.content))


# Error codes of an input the API's content policy rejects.
_POLICY_CODES = frozenset({"content_policy_violation", "content_filter"})


def _failure(error: Exception, timeout: float) -> LLMFailure:
    """The fallback reason for an exception raised by a call."""
    if isinstance(error, TimeoutError | openai.APITimeoutError):
        return LLMFailure("timeout", f"no answer within {timeout:g} s")
    if isinstance(error, openai.RateLimitError):
        return LLMFailure("rate_limited", "429 from the API")
    if isinstance(error, openai.APIStatusError) and error.code in _POLICY_CODES:
        # The API's refusal of an input (an image or audio its policy rejects) is an error
        # status, not a completion: the same reason as the model's own refusal.
        return LLMFailure("refusal", f"content policy (HTTP {error.status_code})")
    if isinstance(error, openai.APIStatusError) and refuses_temperature(error):
        return LLMFailure("api_error", f"HTTP {error.status_code}: the temperature was refused")
    if isinstance(error, openai.APIStatusError) and refuses_format(error):
        return LLMFailure(
            "api_error", f"HTTP {error.status_code}: the structured-output format was refused"
        )
    if isinstance(error, openai.APIStatusError):
        return LLMFailure("api_error", f"HTTP {error.status_code}")
    if isinstance(error, openai.APIConnectionError):
        return LLMFailure("api_error", "connection failed")
    if isinstance(error, pydantic.ValidationError):
        json_broken = any(item["type"] == "json_invalid" for item in error.errors())
        reason = "unparsable" if json_broken else "invalid_output"
        return LLMFailure(reason, f"{error.error_count()} schema error(s)")
    return LLMFailure("unparsable", type(error).__name__)
