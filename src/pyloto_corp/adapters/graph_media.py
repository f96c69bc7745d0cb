"""Graph media: a customer's voice note or picture, downloaded from WhatsApp's Cloud API.

Meta's flow is two requests with the bearer token: `GET /{version}/{media-id}` answers the
media's URL, MIME type, size and sha256; then `GET url` gives the bytes. The URL is signed
(its query carries the signature) and lasts about five minutes, so a download refused as
gone is retried once with a fresh URL from a second info request; a checksum mismatch too.

Neither the URL nor the token ever appears in an exception, a log line or a span: errors
name an HTTP status or a Graph code only, and httpx's own request lines lose their query
string (`_QueryStripper`). Bytes are held in memory only.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import httpx
from opentelemetry.trace import Span, SpanKind

from pyloto_corp.adapters.whatsapp_graph import PERMANENT_CODES, TOKEN_EXPIRED, TRANSIENT_CODES
from pyloto_corp.application.ports import MediaFile, MediaRejected
from pyloto_corp.observability.instruments import Telemetry, mark_failed

log = logging.getLogger(__name__)

TOO_LARGE = "media_too_large"
UNAVAILABLE = "media_unavailable"
CHECKSUM_MISMATCH = "media_checksum_mismatch"

# No retry brings the media back: unknown id or invalid parameter (100), unsupported type
# (131051), media download error (131052), media upload error (131053), and the outbox's.
MEDIA_PERMANENT_CODES = PERMANENT_CODES | {100, 131051, 131052, 131053}
# A download answered with these: the signed URL expired (or was revoked); a fresh one may work.
URL_GONE_STATUSES = frozenset({401, 403, 404, 410})
# Info and download rounds of one fetch: the first, and one more with a fresh URL.
ROUNDS = 2

T = TypeVar("T")


class _Transient(Exception):
    """A failure a later attempt may fix; its text names a status, a code or an error type."""


class _UrlGone(Exception):
    """The download URL was refused: expired, or revoked since the info request."""


@dataclass(frozen=True)
class _Info:
    """What `GET /{media-id}` answered."""

    url: str
    mime_type: str
    sha256: str
    file_size: int | None

    @classmethod
    def of(cls, payload: dict[str, Any]) -> _Info:
        url = payload.get("url")
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
            raise MediaRejected(UNAVAILABLE, "graph answered no media url")
        size = payload.get("file_size")
        return cls(
            url=url,
            mime_type=str(payload.get("mime_type") or "application/octet-stream"),
            sha256=str(payload.get("sha256") or ""),
            file_size=int(size) if isinstance(size, int | str) and str(size).isdigit() else None,
        )


@dataclass
class _Tries:
    """One fetch's authorization header, count of requests and of transient failures, and
    the last HTTP status."""

    auth: str = field(repr=False)
    requests: int = 0
    failures: int = 0
    status: int | None = None


class GraphMedia:
    """`MediaSource` on the Graph API, on a pooled `httpx.AsyncClient` (built by bootstrap).

    Transient failures (5xx, 429, Graph's transient codes, connection errors, timeouts) are
    retried inside `fetch`, `attempts` tries in all for the whole fetch, waiting
    `backoff_seconds[i]` before the (i+2)-th (the last value for any later one).
    """

    def __init__(
        self,
        access_token: str,
        base_url: str,
        api_version: str,
        timeout_seconds: float,
        telemetry: Telemetry | None = None,
        attempts: int = 3,
        backoff_seconds: tuple[float, ...] = (0.2, 0.5),
        tokens: Mapping[str, str] | None = None,
    ) -> None:
        self.telemetry = telemetry or Telemetry()
        # A media id is readable with the token of the business number it was sent to:
        # `tokens` by number, `access_token` for the others (and for no number at all).
        self._default_auth = f"Bearer {access_token}"
        self._auth = {number: f"Bearer {token}" for number, token in (tokens or {}).items()}
        self.base_url = f"{base_url.rstrip('/')}/{api_version}"
        self.attempts = max(1, attempts)
        self.backoff_seconds = backoff_seconds or (0.0,)
        self.host = urlsplit(base_url).hostname or ""
        _QueryStripper.install()
        self._client = httpx.AsyncClient(
            headers={"user-agent": "pyloto"},
            timeout=httpx.Timeout(timeout_seconds, connect=min(timeout_seconds, 5.0)),
            # Should Meta redirect a download, httpx drops the authorization header (set on each
            # request) on a change of origin.
            follow_redirects=True,
        )

    async def fetch(self, media_id: str, max_bytes: int, phone_number_id: str = "") -> MediaFile:
        """The media's bytes, checked against `max_bytes` and the advertised sha256; fetched
        with the token of business number `phone_number_id` (the default token when it has
        none of its own)."""
        tries = _Tries(self._auth.get(phone_number_id, self._default_auth))
        attributes = {"server.address": self.host}
        with self.telemetry.span(
            "graph media fetch", kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            try:
                media = await self._fetch(media_id, max_bytes, tries)
            except MediaRejected as rejected:
                _describe(span, tries, "", None, rejected.reason)
                mark_failed(span, rejected.reason)
                raise
            _describe(span, tries, media.mime_type, len(media.data), "ok")
            return media

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def close(self) -> None:
        """Close the connection pool (as the outbox's `close`)."""
        await self.aclose()

    async def _fetch(self, media_id: str, max_bytes: int, tries: _Tries) -> MediaFile:
        """Info then download; one more round, with a fresh URL, if the first URL was gone
        or its bytes did not match the sha256."""
        failure = MediaRejected(UNAVAILABLE)
        for _ in range(ROUNDS):
            outcome = await self._round(media_id, max_bytes, tries)
            if isinstance(outcome, MediaFile):
                return outcome
            failure = outcome
        raise failure

    async def _round(
        self, media_id: str, max_bytes: int, tries: _Tries
    ) -> MediaFile | MediaRejected:
        """One info request and one download (each with its transient retries): the media,
        or what to raise should the next round fail the same way."""
        info = await self._retrying(tries, partial(self._info, media_id, tries))
        if info.file_size is not None and info.file_size > max_bytes:
            raise MediaRejected(TOO_LARGE, f"{info.file_size} bytes advertised")
        try:
            data = await self._retrying(tries, partial(self._download, info.url, max_bytes, tries))
        except _UrlGone as gone:
            return MediaRejected(UNAVAILABLE, f"download {gone}, again with a fresh url")
        digest = hashlib.sha256(data)
        if info.sha256 and not _matches(digest.digest(), info.sha256):
            return MediaRejected(CHECKSUM_MISMATCH, "sha256 differs from graph's, twice")
        return MediaFile(data, info.mime_type, digest.hexdigest())

    async def _retrying(self, tries: _Tries, call: Callable[[], Awaitable[T]]) -> T:
        """`call`, again after a backoff while it fails transiently and attempts are left."""
        while True:
            tries.requests += 1
            try:
                return await call()
            except _Transient as error:
                tries.failures += 1
                if tries.failures >= self.attempts:
                    raise MediaRejected(UNAVAILABLE, f"transient: {error}") from None
                index = min(tries.failures, len(self.backoff_seconds)) - 1
                await asyncio.sleep(self.backoff_seconds[index])

    async def _info(self, media_id: str, tries: _Tries) -> _Info:
        """`GET /{media-id}`: the media's URL, type, size and sha256."""
        url = f"{self.base_url}/{quote(media_id, safe='')}"
        try:
            headers = {"accept": "application/json", "authorization": tries.auth}
            response = await self._client.get(url, headers=headers)
        except httpx.TimeoutException:
            raise _Transient("info timeout") from None
        except httpx.TransportError as error:
            raise _Transient(f"info {type(error).__name__}") from None
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            raise MediaRejected(UNAVAILABLE, f"info {type(error).__name__}") from None
        tries.status = response.status_code
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            payload = {}
        if response.is_success and "error" not in payload:
            return _Info.of(payload)
        raise _info_error(response.status_code, payload)

    async def _download(self, url: str, max_bytes: int, tries: _Tries) -> bytes:
        """`GET url`, streamed: stops as soon as more than `max_bytes` arrive."""
        try:
            headers = {"authorization": tries.auth}
            async with self._client.stream("GET", url, headers=headers) as response:
                tries.status = response.status_code
                _check_download(response.status_code, response.headers, max_bytes)
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > max_bytes:
                        raise MediaRejected(TOO_LARGE, f"more than {max_bytes} bytes sent")
                return bytes(body)
        except httpx.TimeoutException:
            raise _Transient("download timeout") from None
        except httpx.TransportError as error:
            raise _Transient(f"download {type(error).__name__}") from None
        except (httpx.HTTPError, httpx.InvalidURL) as error:  # undecodable, redirect loop
            raise MediaRejected(UNAVAILABLE, f"download {type(error).__name__}") from None


def _check_download(status: int, headers: httpx.Headers, max_bytes: int) -> None:
    """Raise for a download answer that is not the media, or announces too many bytes."""
    if status in URL_GONE_STATUSES:
        raise _UrlGone(f"http {status}")
    if status >= 500 or status == 429:
        raise _Transient(f"download http {status}")
    if not 200 <= status < 300:
        raise MediaRejected(UNAVAILABLE, f"download http {status}")
    length = headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise MediaRejected(TOO_LARGE, f"{length} bytes announced")


def _info_error(status: int, payload: dict[str, Any]) -> Exception:
    """The error for an info answer that is not the media's, by Graph's code first."""
    error = payload.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    if code == TOKEN_EXPIRED:
        log.error(
            "whatsapp_token_expired",
            extra={"event": "whatsapp_token_expired", "code": code, "http_status": status},
        )
        return MediaRejected(
            UNAVAILABLE, "graph error 190: WHATSAPP_ACCESS_TOKEN expired or revoked"
        )
    if code in MEDIA_PERMANENT_CODES:
        return MediaRejected(UNAVAILABLE, f"graph error {code}")
    if code in TRANSIENT_CODES:
        return _Transient(f"graph error {code}")
    if status >= 500 or status == 429:
        return _Transient(f"info http {status}")
    described = f"graph error {code}" if code is not None else f"info http {status}"
    return MediaRejected(UNAVAILABLE, described)


def _matches(digest: bytes, advertised: str) -> bool:
    """Whether `advertised` is `digest` in hex (the media endpoint's form) or base64 (the
    webhook's form, should Graph ever answer it)."""
    if advertised.lower() == digest.hex():
        return True
    try:
        return base64.b64decode(advertised, validate=True) == digest
    except (binascii.Error, ValueError):
        return False


def _describe(span: Span, tries: _Tries, mime_type: str, size: int | None, outcome: str) -> None:
    """The fetch's span attributes: nothing that identifies the media or its URL."""
    if mime_type:
        span.set_attribute("pyloto.media.mime_type", mime_type)
    if size is not None:
        span.set_attribute("pyloto.media.size_bytes", size)
    span.set_attribute("pyloto.media.attempts", tries.requests)
    span.set_attribute("pyloto.media.outcome", outcome)
    if tries.status is not None:
        span.set_attribute("http.response.status_code", tries.status)


class _QueryStripper(logging.Filter):
    """Drops the query string of the URL in httpx's "HTTP Request: GET <url>" lines: a media
    URL's query is its signature. (Production raises httpx's level to WARNING anyway.)"""

    @classmethod
    def install(cls) -> None:
        """Add the filter to httpx's logger once per process."""
        logger = logging.getLogger("httpx")
        if not any(isinstance(found, cls) for found in logger.filters):
            logger.addFilter(cls())

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                arg.copy_with(query=None, fragment=None) if isinstance(arg, httpx.URL) else arg
                for arg in record.args
            )
        return True
