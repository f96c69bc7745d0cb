"""The Graph media fetch against the fake Graph server: Meta's two requests, the size and
checksum checks, expired URLs, transient and permanent errors, and that the signed media URL
and the token never leave in an exception, a log record or a span."""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from pyloto_corp.adapters.graph_media import GraphMedia
from pyloto_corp.application.ports import MediaRejected
from tests.support.fake_graph import TOKEN, VERSION, FakeGraph, MediaFault
from tests.support.media_files import VOICE, png, voice_note
from tests.support.redis_server import free_port
from tests.support.telemetry_capture import Captured

pytestmark = pytest.mark.anyio

MAX_BYTES = 5 * 1024 * 1024  # WhatsApp's limit for a voice note's bytes is larger; ample here
MEDIA_ID = "1037543291543636"
SPAN = "graph media fetch"


MakeSource = Callable[..., GraphMedia]


@pytest.fixture
async def make_source(graph: FakeGraph) -> AsyncIterator[MakeSource]:
    """GraphMedia on the fake server with the test token and short backoffs; closed after."""
    opened: list[GraphMedia] = []

    def make(**options: Any) -> GraphMedia:
        settings: dict[str, Any] = {
            "access_token": TOKEN,
            "base_url": graph.base_url,
            "api_version": VERSION,
            "timeout_seconds": 2.0,
            "backoff_seconds": (0.01, 0.02),
        }
        source = GraphMedia(**(settings | options))
        opened.append(source)
        return source

    yield make
    for source in opened:
        await source.aclose()


async def rejected(source: GraphMedia, media_id: str = MEDIA_ID, **kw: int) -> MediaRejected:
    """The MediaRejected that fetching `media_id` raises."""
    with pytest.raises(MediaRejected) as caught:
        await source.fetch(media_id, kw.get("max_bytes", MAX_BYTES))
    return caught.value


def requests_of(graph: FakeGraph, media_id: str = MEDIA_ID) -> tuple[int, int]:
    """(info requests, download requests) the server received for the media."""
    return graph.media_requests(media_id, "info"), graph.media_requests(media_id, "download")


# --- what a fetch gives ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "mime_type"), [(png(), "image/png"), (voice_note(), VOICE)], ids=["png", "voice"]
)
async def test_a_media_is_fetched_with_its_type_and_checked_sha256(
    graph: FakeGraph, make_source: MakeSource, data: bytes, mime_type: str
) -> None:
    """One info request and one download give the exact bytes, Graph's MIME type and their
    sha256; both requests carried the bearer token (the fake records no violation)."""
    graph.add_media(MEDIA_ID, data, mime_type)
    media = await make_source().fetch(MEDIA_ID, MAX_BYTES)
    assert media.data == data
    assert media.mime_type == mime_type
    assert media.sha256 == hashlib.sha256(data).hexdigest()
    assert requests_of(graph) == (1, 1)


async def test_a_file_size_over_the_limit_is_refused_without_downloading(
    graph: FakeGraph, make_source: MakeSource
) -> None:
    """Graph advertising more than max_bytes: media_too_large after the info request alone."""
    graph.add_media(MEDIA_ID, png(), "image/png", file_size=50 * 1024 * 1024)
    error = await rejected(make_source())
    assert error.reason == "media_too_large"
    assert requests_of(graph) == (1, 0)


@pytest.mark.parametrize("content_length", [True, False], ids=["announced", "unannounced"])
async def test_a_download_longer_than_the_limit_is_cut_off(
    graph: FakeGraph, make_source: MakeSource, content_length: bool
) -> None:
    """A download bigger than max_bytes though the info said it was small is refused
    (media_too_large) on its Content-Length, or while streaming when it has none; it is not
    retried."""
    graph.add_media(
        MEDIA_ID, voice_note(400_000), VOICE, file_size=1000, content_length=content_length
    )
    error = await rejected(make_source(), max_bytes=100_000)
    assert error.reason == "media_too_large"
    assert requests_of(graph) == (1, 1)


async def test_a_checksum_mismatch_is_downloaded_again_then_refused(
    graph: FakeGraph, make_source: MakeSource
) -> None:
    """Bytes not matching the advertised sha256: a fresh info request and a second download,
    then media_checksum_mismatch."""
    graph.add_media(MEDIA_ID, png(), "image/png", sha256="0" * 64)
    error = await rejected(make_source())
    assert error.reason == "media_checksum_mismatch"
    assert requests_of(graph) == (2, 2)


async def test_a_base64_sha256_is_accepted_too(graph: FakeGraph, make_source: MakeSource) -> None:
    """Graph's sha256 in the webhook's base64 form matches as well as in hex."""
    data = png()
    advertised = base64.b64encode(hashlib.sha256(data).digest()).decode()
    graph.add_media(MEDIA_ID, data, "image/png", sha256=advertised)
    assert (await make_source().fetch(MEDIA_ID, MAX_BYTES)).data == data


# --- media that is gone -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        MediaFault("info", status=404),
        MediaFault("info", code=100),
        MediaFault("info", code=131051),
        MediaFault("info", code=131052),
        MediaFault("info", code=131053),
        MediaFault("info", code=131047),
    ],
    ids=["http404", "code100", "code131051", "code131052", "code131053", "code131047"],
)
async def test_an_unknown_or_refused_media_id_is_unavailable_at_once(
    graph: FakeGraph, make_source: MakeSource, fault: MediaFault
) -> None:
    """Info answered 404 or a permanent Graph code: media_unavailable after one request."""
    graph.add_media(MEDIA_ID, png(), "image/png")
    graph.fail_media(MEDIA_ID, fault)
    error = await rejected(make_source())
    assert error.reason == "media_unavailable"
    assert requests_of(graph) == (1, 0)


async def test_a_media_id_graph_does_not_know_is_unavailable(
    graph: FakeGraph, make_source: MakeSource
) -> None:
    """An id Graph has no media for (code 100, subcode 33): media_unavailable, one request."""
    error = await rejected(make_source(), "999000111")
    assert error.reason == "media_unavailable"
    assert requests_of(graph, "999000111") == (1, 0)


@pytest.mark.parametrize("status", [404, 401, 403, 410])
async def test_an_expired_url_is_replaced_by_a_fresh_one(
    graph: FakeGraph, make_source: MakeSource, status: int
) -> None:
    """The first download refused as gone: a second info request gives a fresh URL, whose
    download succeeds."""
    data = voice_note()
    graph.add_media(MEDIA_ID, data, VOICE)
    graph.fail_media(MEDIA_ID, MediaFault("download", status=status, times=1))
    media = await make_source().fetch(MEDIA_ID, MAX_BYTES)
    assert media.data == data
    assert requests_of(graph) == (2, 2)
    first, second = graph.download_urls
    assert first != second
    downloads = [get.path for get in graph.media_gets if get.kind == "download"]
    assert [graph.base_url + path for path in downloads] == [first, second]


async def test_an_url_gone_each_time_is_unavailable_after_two_downloads(
    graph: FakeGraph, make_source: MakeSource
) -> None:
    """Every download refused (404): media_unavailable after two info requests and two
    downloads."""
    graph.add_media(MEDIA_ID, voice_note(), VOICE)
    graph.fail_media(MEDIA_ID, MediaFault("download", status=404))
    error = await rejected(make_source())
    assert error.reason == "media_unavailable"
    assert requests_of(graph) == (2, 2)


# --- transient errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (MediaFault("info", status=500, times=2), (3, 1)),
        (MediaFault("info", status=429, times=2), (3, 1)),
        (MediaFault("info", code=131000, times=2), (3, 1)),
        (MediaFault("info", code=130429, times=2), (3, 1)),
        (MediaFault("download", status=500, times=2), (1, 3)),
        (MediaFault("download", status=503, times=2), (1, 3)),
    ],
    ids=["info500", "info429", "code131000", "code130429", "download500", "download503"],
)
async def test_transient_errors_are_retried_within_the_fetch(
    graph: FakeGraph,
    make_source: MakeSource,
    fault: MediaFault,
    expected: tuple[int, int],
) -> None:
    """Two transient failures then success: three tries of the failing request (the default
    attempts), and the media."""
    data = png()
    graph.add_media(MEDIA_ID, data, "image/png")
    graph.fail_media(MEDIA_ID, fault)
    assert (await make_source().fetch(MEDIA_ID, MAX_BYTES)).data == data
    assert requests_of(graph) == expected


@pytest.mark.parametrize(
    ("on", "attempts", "expected"),
    [("info", 3, (3, 0)), ("download", 3, (1, 3)), ("info", 5, (5, 0))],
)
async def test_a_transient_error_that_lasts_is_unavailable_after_the_attempts(
    graph: FakeGraph,
    make_source: MakeSource,
    on: str,
    attempts: int,
    expected: tuple[int, int],
) -> None:
    """500 on every try: media_unavailable ("transient: …") after `attempts` requests."""
    graph.add_media(MEDIA_ID, png(), "image/png")
    graph.fail_media(MEDIA_ID, MediaFault(on, status=500))
    error = await rejected(make_source(attempts=attempts))
    assert error.reason == "media_unavailable"
    assert "transient" in str(error)
    assert "500" in str(error)
    assert requests_of(graph) == expected


@pytest.mark.parametrize("on", ["info", "download"])
async def test_a_timeout_is_retried(graph: FakeGraph, make_source: MakeSource, on: str) -> None:
    """A request answered after the timeout is tried again, and the media fetched."""
    data = voice_note()
    graph.add_media(MEDIA_ID, data, VOICE)
    graph.fail_media(MEDIA_ID, MediaFault(on, delay=1.0, times=1))
    media = await make_source(timeout_seconds=0.3).fetch(MEDIA_ID, MAX_BYTES)
    assert media.data == data
    assert requests_of(graph) == ((2, 1) if on == "info" else (1, 2))


async def test_no_connection_is_unavailable_after_the_attempts(graph: FakeGraph) -> None:
    """Nothing listening: connection errors retried, then media_unavailable as transient."""
    source = GraphMedia(TOKEN, f"http://127.0.0.1:{free_port()}", VERSION, 1.0, attempts=2)
    try:
        error = await rejected(source)
    finally:
        await source.aclose()
    assert error.reason == "media_unavailable"
    assert str(error).startswith("media_unavailable: transient: info ConnectError")


async def test_an_expired_token_is_unavailable_and_said_so(
    graph: FakeGraph, make_source: MakeSource, caplog: pytest.LogCaptureFixture
) -> None:
    """Graph code 190: media_unavailable at once, its detail saying the token expired, and
    the `whatsapp_token_expired` error logged for the alert."""
    graph.add_media(MEDIA_ID, png(), "image/png")
    graph.fail_media(MEDIA_ID, MediaFault("info", code=190))
    with caplog.at_level(logging.ERROR, logger="pyloto_corp"):
        error = await rejected(make_source())
    assert error.reason == "media_unavailable"
    assert (
        str(error) == "media_unavailable: graph error 190: WHATSAPP_ACCESS_TOKEN expired or revoked"
    )
    assert requests_of(graph) == (1, 0)
    logged = [record for record in caplog.records if record.name.startswith("pyloto_corp")]
    assert [record.msg for record in logged] == ["whatsapp_token_expired"]


# --- spans and secrets ------------------------------------------------------------------------


def span_texts(captured: Captured) -> list[str]:
    """Every exported span as JSON."""
    return [span.to_json() for span in captured.spans()]


async def test_a_fetch_is_one_client_span_with_type_size_attempts_and_outcome(
    graph: FakeGraph, make_source: MakeSource, captured: Captured
) -> None:
    """A fetch that needed a fresh URL is one `graph media fetch` CLIENT span: its MIME type,
    size, four requests (info, gone, info, download) and outcome ok; a refused fetch's span
    is failed with its reason."""
    data = voice_note()
    graph.add_media(MEDIA_ID, data, VOICE)
    graph.fail_media(MEDIA_ID, MediaFault("download", status=404, times=1))
    source = make_source(telemetry=captured.runtime.telemetry)
    await source.fetch(MEDIA_ID, MAX_BYTES)
    graph.add_media("2000", png(), "image/png", file_size=10**9)
    await rejected(source, "2000")

    ok, refused = captured.named(SPAN)
    assert ok.kind is SpanKind.CLIENT
    assert ok.status.status_code is StatusCode.UNSET
    assert dict(ok.attributes or {}) == {
        "server.address": "127.0.0.1",
        "pyloto.media.mime_type": VOICE,
        "pyloto.media.size_bytes": len(data),
        "pyloto.media.attempts": 4,
        "pyloto.media.outcome": "ok",
        "http.response.status_code": 200,
    }
    attributes = dict(refused.attributes or {})
    assert refused.status.status_code is StatusCode.ERROR
    assert attributes["error.type"] == "media_too_large"
    assert attributes["pyloto.media.outcome"] == "media_too_large"
    assert attributes["pyloto.media.attempts"] == 1
    graph.add_media("3000", png(), "image/png")
    graph.fail_media("3000", MediaFault("download", status=410))
    await rejected(source, "3000")
    gone = captured.named(SPAN)[-1]
    assert dict(gone.attributes or {}) == {
        "server.address": "127.0.0.1",
        "pyloto.media.attempts": 4,
        "pyloto.media.outcome": "media_unavailable",
        "http.response.status_code": 410,
        "error.type": "media_unavailable",
    }


async def test_the_media_url_and_the_token_never_leave(
    graph: FakeGraph,
    make_source: MakeSource,
    captured: Captured,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Across a success, an expired URL, a checksum mismatch, a URL gone for good, a
    download failing with 500 and an expired token, with every logger at DEBUG (httpx's
    request lines included): no exception message or chain, log record or exported span
    holds a download URL, its query string or the access token, and no span names the media
    id."""
    scenarios: list[tuple[str, bytes, dict[str, Any], MediaFault | None]] = [
        ("8810000000003001", png(), {}, None),
        ("8810000000003002", voice_note(), {}, MediaFault("download", status=401, times=1)),
        ("8810000000003003", png(), {"sha256": "ab" * 32}, None),
        ("8810000000003004", voice_note(), {}, MediaFault("download", status=410)),
        ("8810000000003005", png(), {}, MediaFault("download", status=500)),
        ("8810000000003006", png(), {}, MediaFault("info", code=190)),
    ]
    source = make_source(telemetry=captured.runtime.telemetry)
    errors: list[BaseException] = []
    # httpx's own logger too: the service's logging setup (run by other tests in this
    # process) raises it to WARNING, and its request lines are what could leak the URL.
    with caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, logger="httpx"):
        for media_id, data, advertised, fault in scenarios:
            graph.add_media(media_id, data, "image/png", **advertised)
            if fault is not None:
                graph.fail_media(media_id, fault)
            try:
                await source.fetch(media_id, MAX_BYTES)
            except MediaRejected as error:
                errors.append(error)
    assert len(errors) == 4
    assert len(graph.download_urls) == 8  # 1 + 2 + 2 + 2 + 1 (500 on its one URL) + 0
    assert any("HTTP Request: GET" in record.getMessage() for record in caplog.records)

    secrets = [TOKEN]
    for url in graph.download_urls:
        secrets += [url, url.split("?", 1)[1], url.split("hash=", 1)[1]]
    texts = [text for error in errors for text in chain_texts(error)]
    texts += [record.getMessage() for record in caplog.records]
    texts += [repr(record.__dict__) for record in caplog.records]
    spans = span_texts(captured)
    assert len(spans) == len(scenarios)
    for text in texts + spans:
        for secret in secrets:
            assert secret not in text, text[:200]
    for span in spans:
        assert not any(media_id in span for media_id, *_ in scenarios)


def chain_texts(error: BaseException) -> list[str]:
    """The message and repr of an exception, its cause and its context, recursively."""
    found: list[str] = []
    seen: BaseException | None = error
    while seen is not None:
        found += [str(seen), repr(seen), repr(getattr(seen, "args", ()))]
        seen = seen.__cause__ or seen.__context__
    return found
