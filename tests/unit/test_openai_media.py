"""The media step's calls on the OpenAI adapter: a voice note's transcription (a multipart
upload through the pooled transport) and a picture's description (a chat completion with the
image inline), against the local fake server, with every failure's reason and their spans.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator

import httpx2
import pytest
from openai import AsyncOpenAI

from pyloto_corp.adapters.openai_llm import OpenAIAssistant, PooledTransport
from pyloto_corp.ai.prompts import BusinessProfile
from pyloto_corp.application.ports import LLMFailure
from pyloto_corp.devtools.fake_openai import (
    DEFAULTS,
    IMAGE,
    TRANSCRIPTION,
    Answer,
    FakeOpenAI,
    error,
    json_answer,
    policy_refusal,
    refusal,
    transcript,
)
from tests.support.media_files import png, voice_note_ogg
from tests.support.telemetry_capture import HASH_KEY, Captured

pytestmark = pytest.mark.anyio

BUSINESS = BusinessProfile("Barbearia Navalha", "9h às 19h", "Corte: R$ 50.", None)
CHAT_MODEL = "gpt-4o-mini"
TRANSCRIPTION_MODEL = "gpt-4o-mini-transcribe"
VOICE_NOTE = "audio/ogg; codecs=opus"  # WhatsApp's MIME type of a voice note
# The fake's usage blocks: a transcription's, a chat completion's.
TRANSCRIPTION_TOKENS, CHAT_TOKENS = (60, 12), (120, 40)


class RecordingTransport(PooledTransport):
    """The pooled transport, keeping each request it was handed with the type of its body
    as handed (reading the body replaces it with bytes)."""

    def __init__(self) -> None:
        super().__init__(connect_timeout=2.0, max_connections=4)
        self.handled: list[tuple[httpx2.Request, type]] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self.handled.append((request, type(request.stream)))
        return await super().handle_async_request(request)


def sdk_client(base_url: str, transport: httpx2.AsyncBaseTransport, timeout: float) -> AsyncOpenAI:
    """The SDK as `create_client` builds it (no retries), on `transport`."""
    http_client = httpx2.AsyncClient(transport=transport, timeout=httpx2.Timeout(timeout))
    return AsyncOpenAI(
        api_key="sk-test",
        base_url=base_url,
        timeout=timeout,
        max_retries=0,
        http_client=http_client,
    )


@pytest.fixture
def transport() -> RecordingTransport:
    """The transport under the assistant of the test."""
    return RecordingTransport()


@pytest.fixture
def captured() -> Iterator[Captured]:
    """Telemetry on in-memory exporters behind the production redaction."""
    capture = Captured(HASH_KEY)
    yield capture
    capture.runtime.shutdown()


@pytest.fixture
async def assistant(
    fake_openai: FakeOpenAI, transport: RecordingTransport, captured: Captured
) -> AsyncIterator[OpenAIAssistant]:
    """The adapter on the fake server: 2 s deadline, no SDK retries, captured telemetry."""
    built = OpenAIAssistant(
        sdk_client(fake_openai.base_url, transport, 2.0),
        CHAT_MODEL,
        2.0,
        BUSINESS,
        captured.runtime.telemetry,
        transcription_model=TRANSCRIPTION_MODEL,
    )
    yield built
    await built.close()


# --- transcription ---------------------------------------------------------------------------


async def test_a_voice_note_is_uploaded_whole_with_its_type_the_language_and_the_model(
    assistant: OpenAIAssistant, fake_openai: FakeOpenAI, transport: RecordingTransport
) -> None:
    """A real OGG/Opus voice note goes as the multipart file, byte for byte, under its MIME
    type and an .ogg name, with `language=pt`, the transcription model and a JSON answer asked
    for; the transcript comes back with its tokens and model. The SDK's multipart body (a
    stream, not bytes) goes out through the pooled transport with a content length."""
    audio = voice_note_ogg(seconds=1.0)
    assert audio.startswith(b"OggS")
    assert b"OpusHead" in audio

    heard = await assistant.transcribe(audio, VOICE_NOTE)

    assert heard.value == DEFAULTS[TRANSCRIPTION]["text"]
    assert (heard.input_tokens, heard.output_tokens) == TRANSCRIPTION_TOKENS
    assert heard.model == TRANSCRIPTION_MODEL
    assert heard.latency_ms >= 0
    (upload,) = fake_openai.uploads
    assert upload.data == audio
    assert upload.content_type == VOICE_NOTE
    assert upload.filename == "voice.ogg"
    assert upload.fields == {
        "model": TRANSCRIPTION_MODEL,
        "language": "pt",
        "response_format": "json",
    }
    assert upload.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert upload.headers["authorization"] == "Bearer sk-test"
    assert "transfer-encoding" not in upload.headers
    ((request, body_type),) = transport.handled
    assert request.url.path == "/v1/audio/transcriptions"
    assert not issubclass(body_type, httpx2.ByteStream), "the SDK hands over a stream"
    assert int(upload.headers["content-length"]) == len(await request.aread())
    assert fake_openai.requests == [], "no chat completion"


@pytest.mark.parametrize(
    ("mime_type", "filename"),
    [("audio/mpeg", "voice.mp3"), ("audio/mp4", "voice.m4a"), ("audio/AMR", "voice.amr")],
)
async def test_the_file_name_tells_the_api_the_audio_format(
    assistant: OpenAIAssistant, fake_openai: FakeOpenAI, mime_type: str, filename: str
) -> None:
    """The API tells an upload's format by its name: each WhatsApp audio type gets its
    extension."""
    await assistant.transcribe(b"\x00\x01audio", mime_type)
    (upload,) = fake_openai.uploads
    assert (upload.filename, upload.content_type, upload.data) == (
        filename,
        mime_type,
        b"\x00\x01audio",
    )


@pytest.mark.parametrize(
    ("answer", "reason", "tokens"),
    [
        (transcript(""), "empty_transcript", TRANSCRIPTION_TOKENS),
        (transcript("  \n "), "empty_transcript", TRANSCRIPTION_TOKENS),
        (error(500), "api_error", (0, 0)),
        (error(429), "rate_limited", (0, 0)),
        (policy_refusal(), "refusal", (0, 0)),
        (Answer(content={"words": "oi"}), "unparsable", (0, 0)),
    ],
    ids=["empty", "blank", "500", "429", "policy", "no-text"],
)
async def test_a_failed_transcription_says_why(
    assistant: OpenAIAssistant,
    fake_openai: FakeOpenAI,
    answer: Answer,
    reason: str,
    tokens: tuple[int, int],
) -> None:
    """An empty transcript, an error status, a content policy's refusal or an answer without
    text raise LLMFailure with the reason the record keeps (and the tokens an answered call
    cost)."""
    fake_openai.queue(TRANSCRIPTION, answer)
    with pytest.raises(LLMFailure) as caught:
        await assistant.transcribe(voice_note_ogg(0.2), VOICE_NOTE)
    assert caught.value.reason == reason
    assert (caught.value.input_tokens, caught.value.output_tokens) == tokens


async def test_a_slow_transcription_times_out_within_the_deadline(
    fake_openai: FakeOpenAI, transport: RecordingTransport
) -> None:
    """A transcript later than the deadline is a `timeout`, like a chat call's."""
    slow = OpenAIAssistant(
        sdk_client(fake_openai.base_url, transport, 0.3), CHAT_MODEL, 0.3, BUSINESS
    )
    fake_openai.queue(TRANSCRIPTION, transcript("Oi", delay=1.0))
    try:
        with pytest.raises(LLMFailure) as caught:
            await slow.transcribe(voice_note_ogg(0.2), VOICE_NOTE)
    finally:
        await slow.close()
    assert str(caught.value) == "timeout: no answer within 0.3 s"


async def test_the_pooled_transport_sends_streamed_bodies_whole_with_a_length(
    fake_openai: FakeOpenAI,
) -> None:
    """Bodies httpx2 would stream (a multipart file of unknown size, chunked; an async
    iterator) go out whole with a content length: the transport reads them before sending."""

    class Unsized:
        """A file whose size cannot be known before reading it (no seek, no fileno)."""

        def __init__(self, data: bytes) -> None:
            self.left = data

        def read(self, size: int = -1) -> bytes:
            size = len(self.left) if size < 0 else size
            taken, self.left = self.left[:size], self.left[size:]
            return taken

    audio = voice_note_ogg(0.5)
    transport = PooledTransport(connect_timeout=2.0, max_connections=2)
    async with httpx2.AsyncClient(transport=transport) as client:
        request = client.build_request(
            "POST",
            f"{fake_openai.base_url}/audio/transcriptions",
            data={"model": "m"},
            files={"file": ("v.ogg", Unsized(audio), "audio/ogg")},
        )
        assert request.headers["transfer-encoding"] == "chunked"
        answered = await client.send(request)
        assert answered.status_code == 200

        async def pieces() -> AsyncIterator[bytes]:
            yield b'{"model": "m", '
            yield b'"messages": []}'

        answered = await client.post(f"{fake_openai.base_url}/chat/completions", content=pieces())
        assert answered.status_code == 200
    (upload,) = fake_openai.uploads
    assert upload.data == audio
    assert upload.fields == {"model": "m"}
    assert "transfer-encoding" not in upload.headers
    assert int(upload.headers["content-length"]) > len(audio)
    assert fake_openai.requests == [{"model": "m", "messages": []}]


# --- image description -----------------------------------------------------------------------


async def test_a_picture_goes_inline_with_its_caption_and_its_description_comes_back(
    assistant: OpenAIAssistant, fake_openai: FakeOpenAI
) -> None:
    """The PNG goes as a base64 data URL of its exact bytes beside the caption, asking for the
    ImageDescription schema with the chat model; the parsed description comes back with its
    cost."""
    picture = png(16, 8, (200, 30, 30))
    assert picture.startswith(b"\x89PNG\r\n\x1a\n")

    described = await assistant.describe_image(picture, "image/png", "Chegou quebrado")

    assert described.value == DEFAULTS[IMAGE]["description"]
    assert (described.input_tokens, described.output_tokens) == CHAT_TOKENS
    assert described.model == CHAT_MODEL
    (request,) = fake_openai.seen(IMAGE)
    assert request["model"] == CHAT_MODEL
    assert request["response_format"]["json_schema"]["strict"] is True
    system, user = request["messages"]
    assert system["role"] == "system"
    text, image = user["content"]
    assert text == {"type": "text", "text": "Legenda do cliente: Chegou quebrado"}
    assert image["type"] == "image_url"
    prefix, encoded = image["image_url"]["url"].split(",", 1)
    assert prefix == "data:image/png;base64"
    assert base64.b64decode(encoded, validate=True) == picture
    assert fake_openai.uploads == []


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (refusal(), "refusal"),
        (policy_refusal(), "refusal"),
        (Answer(content=DEFAULTS[IMAGE], finish_reason="content_filter"), "refusal"),
        (json_answer({"description": ""}), "invalid_output"),
        (error(429), "rate_limited"),
        (error(500), "api_error"),
    ],
    ids=["refusal", "policy", "content-filter", "empty", "429", "500"],
)
async def test_a_failed_description_says_why(
    assistant: OpenAIAssistant, fake_openai: FakeOpenAI, answer: Answer, reason: str
) -> None:
    """A refusal (the model's, or the API's content policy), an empty description or an error
    status raise LLMFailure with the reason of the other chat calls."""
    fake_openai.queue(IMAGE, answer)
    with pytest.raises(LLMFailure) as caught:
        await assistant.describe_image(png(2, 2, (0, 0, 0)), "image/jpeg", "")
    assert caught.value.reason == reason


async def test_a_slow_description_times_out_within_the_deadline(
    fake_openai: FakeOpenAI, transport: RecordingTransport
) -> None:
    """A description later than the deadline is a `timeout`."""
    slow = OpenAIAssistant(
        sdk_client(fake_openai.base_url, transport, 0.3), CHAT_MODEL, 0.3, BUSINESS
    )
    fake_openai.queue(IMAGE, json_answer(DEFAULTS[IMAGE], delay=1.0))
    try:
        with pytest.raises(LLMFailure) as caught:
            await slow.describe_image(png(2, 2, (0, 0, 0)), "image/png", "")
    finally:
        await slow.close()
    assert caught.value.reason == "timeout"


# --- what leaves the process -----------------------------------------------------------------


async def test_media_spans_and_counts_carry_no_transcript_description_or_caption(
    assistant: OpenAIAssistant, fake_openai: FakeOpenAI, captured: Captured
) -> None:
    """Each media call is a client span named after its operation and model, with the gen_ai
    attributes, a latency and `pyloto.llm.step=media`, counted by outcome; no span holds the
    transcript, the description, the caption or the media."""
    said = "Meu CPF é 123.456.789-09, quanto fica o conserto?"
    caption = "A tela chegou rachada, Maria Aparecida"
    fake_openai.queue(TRANSCRIPTION, transcript(said), transcript(""))
    audio, picture = voice_note_ogg(0.2), png(4, 4, (1, 2, 3))

    assert (await assistant.transcribe(audio, VOICE_NOTE)).value == said
    with pytest.raises(LLMFailure):
        await assistant.transcribe(audio, VOICE_NOTE)
    await assistant.describe_image(picture, "image/png", caption)

    heard, unheard = captured.named(f"transcription {TRANSCRIPTION_MODEL}")
    (seen,) = captured.named(f"chat {CHAT_MODEL}")
    attributes = dict(heard.attributes or {})
    assert attributes["gen_ai.operation.name"] == "transcription"
    assert attributes["gen_ai.system"] == "openai"
    assert attributes["gen_ai.request.model"] == TRANSCRIPTION_MODEL
    assert attributes["gen_ai.response.model"] == TRANSCRIPTION_MODEL
    assert attributes["pyloto.llm.step"] == "media"
    assert isinstance(attributes["pyloto.llm.latency_ms"], float)
    assert (
        attributes["gen_ai.usage.input_tokens"],
        attributes["gen_ai.usage.output_tokens"],
    ) == TRANSCRIPTION_TOKENS
    assert dict(unheard.attributes or {})["error.type"] == "empty_transcript"
    assert dict(seen.attributes or {})["gen_ai.operation.name"] == "chat"
    assert dict(seen.attributes or {})["pyloto.llm.step"] == "media"
    assert captured.points("pyloto.llm.calls") == {
        (("pyloto.llm.step", "media"), ("pyloto.outcome", "ok")): 2,
        (("pyloto.llm.step", "media"), ("pyloto.outcome", "empty_transcript")): 1,
    }

    (request,) = fake_openai.seen(IMAGE)
    secrets = [
        said,
        "123.456.789-09",
        caption,
        "Maria Aparecida",
        DEFAULTS[IMAGE]["description"],
        request["messages"][0]["content"],
        request["messages"][1]["content"][1]["image_url"]["url"][:60],
        base64.b64encode(audio[:48]).decode(),
    ]
    spans = captured.spans()
    assert len(spans) == 3
    for span in spans:
        serialised = span.to_json()
        for secret in secrets:
            assert secret not in serialised, (span.name, secret[:40])
