"""The media step end to end: a voice note or picture webhook is fetched from a local server
speaking Graph's media endpoints, transcribed or described on the real `openai` SDK against a
local server speaking the OpenAI API (multipart upload included), and answered from what the
customer said; each failure falls back with its reason after the right number of requests,
and no media URL, token or transcript reaches a log line or a span."""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from pyloto_corp.bootstrap import bootstrap
from pyloto_corp.config import Settings
from pyloto_corp.devtools.fake_openai import (
    DRAFT,
    EVENT,
    IMAGE,
    TRANSCRIPTION,
    FakeOpenAI,
    error,
    json_answer,
    policy_refusal,
    refusal,
    transcript,
)
from pyloto_corp.http.app import create_app
from pyloto_corp.observability.logging import JsonFormatter
from pyloto_corp.observability.setup import TelemetryRuntime
from tests.e2e.support import Pyloto, not_the_test_client, trajectory
from tests.support.fake_graph import PHONE_NUMBER_ID, TOKEN, FakeGraph, MediaFault
from tests.support.helpers import CONTACT_NAME, CPF, SENDER, envelope, new_wamid, now_stamp
from tests.support.media_files import VOICE, png, voice_note
from tests.support.telemetry_capture import HASH_KEY, Captured

pytestmark = pytest.mark.anyio

MEDIA_PATH = [
    "received",
    "deduped",
    "media",
    "llm1",
    "llm2",
    "llm3",
    "queued_outbound",
    "sending",
    "sent",
]
MEDIA_FALLBACK = ["received", "deduped", "fallback", "queued_outbound", "sending", "sent"]
SPOKEN = "Oi, meu pedido chegou quebrado, meu CPF é 123.456.789-09, podem trocar?"
AUDIO_TEMPLATE = "Recebemos seu áudio"

OpenApp = Callable[..., AbstractAsyncContextManager[Pyloto]]


@pytest.fixture
def open_app(
    make_settings: Callable[..., Settings], fake_openai: FakeOpenAI, graph: FakeGraph
) -> OpenApp:
    """The app with the LLM on the fake OpenAI server and WhatsApp on the fake Graph server."""

    @asynccontextmanager
    async def open_with(
        telemetry: TelemetryRuntime | None = None, **overrides: str
    ) -> AsyncIterator[Pyloto]:
        variables = {
            "OPENAI_API_KEY": "sk-test",
            "OPENAI_BASE_URL": fake_openai.base_url,
            "OPENAI_TIMEOUT_SECONDS": "1",
            "OPENAI_MAX_RETRIES": "0",
            "WHATSAPP_ACCESS_TOKEN": TOKEN,
            "WHATSAPP_PHONE_NUMBER_ID": PHONE_NUMBER_ID,
            "WHATSAPP_API_BASE_URL": graph.base_url,
            "WHATSAPP_TIMEOUT_SECONDS": "2",
            "WHATSAPP_PACING_SECONDS": "0",
            **overrides,
        }
        app = create_app(bootstrap(make_settings(**variables), telemetry=telemetry))
        async with AsyncTestClient(app=app) as client:
            yield Pyloto(client)

    return open_with


def voice_message(media_id: str, message_id: str | None = None) -> dict[str, Any]:
    """An inbound voice note, as Meta sends it."""
    return {
        "from": SENDER,
        "id": message_id or new_wamid(),
        "timestamp": now_stamp(),
        "type": "audio",
        "audio": {"mime_type": VOICE, "id": media_id, "voice": True},
    }


def image_message(media_id: str, caption: str | None = None) -> dict[str, Any]:
    """An inbound picture, with its caption if any."""
    image: dict[str, Any] = {"mime_type": "image/png", "id": media_id}
    if caption is not None:
        image["caption"] = caption
    return {
        "from": SENDER,
        "id": new_wamid(),
        "timestamp": now_stamp(),
        "type": "image",
        "image": image,
    }


async def run(app: Pyloto, message: dict[str, Any]) -> dict[str, Any]:
    """Post one signed message and wait for it to end; its record view."""
    response = await app.post(envelope([message]))
    assert response.status_code == 200, response.text
    view = await app.wait_for(message["id"])
    assert view["state"] == "sent", view
    return view


def sent_text(graph: FakeGraph, message_id: str) -> str:
    (send,) = graph.sends_for(message_id)
    return json.dumps(send.body, ensure_ascii=False)


async def test_a_voice_note_is_answered_from_its_transcript(
    open_app: OpenApp, fake_openai: FakeOpenAI, graph: FakeGraph
) -> None:
    """received → deduped → media → llm1 → … → sent: the OGG/Opus bytes reach the
    transcription endpoint as a multipart upload with Portuguese hinted, and LLM#1 and LLM#2
    read the transcript (masked) instead of a request to type."""
    audio = voice_note()
    graph.add_media("4001", audio, VOICE)
    fake_openai.queue(TRANSCRIPTION, transcript(SPOKEN))
    async with open_app() as app:
        view = await run(app, voice_message("4001"))

    assert trajectory(view) == MEDIA_PATH
    assert view["fallback_reason"] is None
    assert view["results"]["media_kind"] == "transcript"
    assert CPF not in view["results"]["media_text"]  # masked in the view
    assert "[cpf]" in view["results"]["media_text"]
    (upload,) = fake_openai.uploads
    assert upload.data == audio
    assert upload.fields["language"] == "pt"
    assert upload.fields["model"] == "gpt-4o-mini-transcribe"
    assert upload.content_type.startswith("audio/ogg")
    (detect,) = fake_openai.seen(EVENT)
    prompt = json.dumps(detect["messages"], ensure_ascii=False)
    assert "pedido chegou quebrado" in prompt
    assert CPF not in prompt  # the transcript is masked for the LLM like typed text
    (draft,) = fake_openai.seen(DRAFT)
    assert "pedido chegou quebrado" in json.dumps(draft["messages"], ensure_ascii=False)
    assert AUDIO_TEMPLATE not in sent_text(graph, view["message_id"])
    assert graph.media_requests("4001", "info") == 1
    assert graph.media_requests("4001", "download") == 1


async def test_a_picture_with_its_caption_is_described_and_both_reach_llm1(
    open_app: OpenApp, fake_openai: FakeOpenAI, graph: FakeGraph
) -> None:
    picture = png(24, 12)
    graph.add_media("4101", picture, "image/png")
    fake_openai.queue(
        IMAGE, json_answer({"description": "Uma caixa amassada com a tampa rasgada."})
    )
    async with open_app() as app:
        view = await run(app, image_message("4101", caption="Chegou assim"))

    assert trajectory(view) == MEDIA_PATH
    assert view["results"]["media_kind"] == "description"
    (described,) = fake_openai.seen(IMAGE)
    parts = [
        p for m in described["messages"] if isinstance(m["content"], list) for p in m["content"]
    ]
    urls = [p["image_url"]["url"] for p in parts if p.get("type") == "image_url"]
    assert len(urls) == 1
    assert base64.b64decode(urls[0].split(",", 1)[1]) == picture
    assert "Chegou assim" in json.dumps(described["messages"], ensure_ascii=False)
    (detect,) = fake_openai.seen(EVENT)
    prompt = json.dumps(detect["messages"], ensure_ascii=False)
    assert "Chegou assim" in prompt
    assert "caixa amassada" in prompt


async def test_a_picture_without_caption_is_answered_from_its_description(
    open_app: OpenApp, fake_openai: FakeOpenAI, graph: FakeGraph
) -> None:
    graph.add_media("4201", png(), "image/png")
    async with open_app() as app:
        view = await run(app, image_message("4201"))
    assert trajectory(view) == MEDIA_PATH
    (detect,) = fake_openai.seen(EVENT)
    assert "[imagem enviada:" in json.dumps(detect["messages"], ensure_ascii=False)


# --- the failure matrix -------------------------------------------------------------------

# (case, how the media is served, what the transcription answers, the fallback reason,
#  Graph info requests, Graph downloads, transcription requests)
MATRIX: list[tuple[str, dict[str, Any], list[MediaFault], Any, str, int, int, int]] = [
    ("checksum", {"sha256": "ab" * 32}, [], None, "media_checksum_mismatch", 2, 2, 0),
    ("oversize", {"file_size": 17 * 1024 * 1024}, [], None, "media_too_large", 1, 0, 0),
    ("unknown_id", {"absent": True}, [], None, "media_unavailable", 1, 0, 0),
    (
        "expired_url",
        {},
        [MediaFault("download", status=404)],
        None,
        "media_unavailable",
        2,
        2,
        0,
    ),
    ("graph_5xx", {}, [MediaFault("info", status=500)], None, "media_unavailable", 3, 0, 0),
    ("timeout", {}, [], transcript("tarde demais", delay=2.5), "transcription_failed", 1, 1, 1),
    ("policy_refusal", {}, [], policy_refusal(), "transcription_failed", 1, 1, 1),
    ("api_error", {}, [], error(500), "transcription_failed", 1, 1, 1),
]


SECOND_NUMBER = "106540352242933"
SECOND_TOKEN = "EAAG-test-second-number-token"


async def test_a_voice_note_to_a_second_number_is_fetched_with_its_token(
    open_app: OpenApp, fake_openai: FakeOpenAI, graph: FakeGraph
) -> None:
    """Graph lets only the token of the number a voice note was sent to read it: with two
    numbers of their own tokens, each note is fetched with its number's and transcribed."""
    graph.add_number(SECOND_NUMBER, SECOND_TOKEN)
    graph.add_media("4601", voice_note(), VOICE, number=SECOND_NUMBER)
    graph.add_media("4602", voice_note(), VOICE)
    fake_openai.always(TRANSCRIPTION, transcript(SPOKEN))
    tokens = f"{SECOND_NUMBER}:{SECOND_TOKEN}"
    async with open_app(
        WHATSAPP_PHONE_NUMBER_IDS=SECOND_NUMBER, WHATSAPP_ACCESS_TOKENS=tokens
    ) as app:
        second = envelope([voice_message("4601")])
        second["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = SECOND_NUMBER
        assert (await app.post(second)).status_code == 200
        views = [await app.wait_for(message_ids_of(second))]
        views.append(await run(app, voice_message("4602")))

    assert [view["state"] for view in views] == ["sent", "sent"]
    assert [view["results"]["media_kind"] for view in views] == ["transcript", "transcript"]
    assert graph.violations == []  # a media request with another number's token is one
    assert graph.media_requests("4601", "download") == 1


def message_ids_of(payload: dict[str, Any]) -> str:
    """The id of the one message of a webhook."""
    (message,) = payload["entry"][0]["changes"][0]["value"]["messages"]
    return str(message["id"])


@pytest.mark.parametrize(
    ("case", "served", "faults", "answer", "reason", "infos", "downloads", "uploads"),
    MATRIX,
    ids=[row[0] for row in MATRIX],
)
async def test_each_media_failure_falls_back_with_its_reason(
    open_app: OpenApp,
    fake_openai: FakeOpenAI,
    graph: FakeGraph,
    case: str,
    served: dict[str, Any],
    faults: list[MediaFault],
    answer: Any,
    reason: str,
    infos: int,
    downloads: int,
    uploads: int,
) -> None:
    """A sha256 mismatch, an oversize file, an unknown media id, an expired URL, Graph
    failing, a transcription timeout, a refusal and an API error: each falls back with its
    reason and the audio template, after the right number of requests."""
    media_id = "4300"
    if not served.get("absent"):
        graph.add_media(media_id, voice_note(), VOICE, **served)
    if faults:
        graph.fail_media(media_id, *faults)
    if answer is not None:
        fake_openai.queue(TRANSCRIPTION, answer)
    async with open_app() as app:
        view = await run(app, voice_message(media_id))

    assert trajectory(view) == MEDIA_FALLBACK, case
    assert view["fallback_reason"] == reason
    assert view["results"]["fallback_step"] == "media"
    assert AUDIO_TEMPLATE in sent_text(graph, view["message_id"])
    assert graph.media_requests(media_id, "info") == infos
    assert graph.media_requests(media_id, "download") == downloads
    assert len(fake_openai.uploads) == uploads
    assert fake_openai.seen(EVENT) == []  # no LLM step after the media step failed


async def test_an_image_description_refused_falls_back_with_its_reason(
    open_app: OpenApp, fake_openai: FakeOpenAI, graph: FakeGraph
) -> None:
    graph.add_media("4401", png(), "image/png")
    fake_openai.queue(IMAGE, refusal())
    async with open_app() as app:
        view = await run(app, image_message("4401", caption="olha"))
    assert view["fallback_reason"] == "description_failed"
    assert "Recebemos seu arquivo" in sent_text(graph, view["message_id"])


async def test_llm_disabled_or_sampled_out_skips_the_fetch(
    open_app: OpenApp, fake_openai: FakeOpenAI, graph: FakeGraph
) -> None:
    """The kill switch and the rollout apply to the media step: no Graph media request, no
    transcription, the audio template with the reason."""
    graph.add_media("4501", voice_note(), VOICE)
    for overrides, reason in (
        ({"OPENAI_ENABLED": "false"}, "llm_disabled"),
        ({"OPENAI_ROLLOUT_PERCENT": "0"}, "sampled_out"),
    ):
        async with open_app(**overrides) as app:
            view = await run(app, voice_message("4501"))
        assert view["fallback_reason"] == reason
        assert AUDIO_TEMPLATE in sent_text(graph, view["message_id"])
    assert graph.media_requests("4501", "info") == 0
    assert fake_openai.uploads == []


async def test_no_media_url_token_or_transcript_reaches_a_log_line_or_a_span(
    open_app: OpenApp, fake_openai: FakeOpenAI, graph: FakeGraph
) -> None:
    """Logs at DEBUG and every exported span of a voice note answered from its transcript,
    and of one whose download expired, carry no media URL (nor its query), no token, no
    transcript and none of the customer's words."""
    graph.add_media("4601", voice_note(), VOICE)
    graph.add_media("4602", voice_note(), VOICE)
    graph.fail_media("4602", MediaFault("download", status=401))
    fake_openai.queue(TRANSCRIPTION, transcript(SPOKEN))
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(not_the_test_client)
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.DEBUG)
    capture = Captured(HASH_KEY)
    try:
        async with open_app(
            telemetry=capture.runtime, LOG_LEVEL="DEBUG", PRIVACY_HASH_KEY=HASH_KEY
        ) as app:
            await run(app, voice_message("4601"))
            await run(app, voice_message("4602"))
        spans = "\n".join(span.to_json() for span in capture.spans())
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        capture.runtime.shutdown()
    assert "graph media fetch" in spans
    logs = stream.getvalue()
    assert "media_understood" in logs
    secrets = [TOKEN, "media-download", "hash=", "quebrado", "pedido chegou", CPF, CONTACT_NAME]
    secrets += graph.download_urls
    for secret in secrets:
        assert secret not in logs, secret
        assert secret not in spans, secret
