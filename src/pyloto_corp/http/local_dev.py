"""/internal/local: what `pyloto simulate` asks of a server that runs without Meta.

- `POST /internal/local/media` (the file's bytes, its MIME type as Content-Type): stored in
  this server's local media folder, whatever the working directory `simulate` runs in;
  answers the new media id.
- `POST /internal/local/refuse-send` (`{"message_id": ...}`): the dry-run outbox refuses
  the next send of that record's reply, so it ends in `failed` (a dead letter to replay).

Both take X-Internal-Token only, and answer 409 on a server that talks to the Graph API
(WHATSAPP_ACCESS_TOKEN set), where neither means anything.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import msgspec
from litestar import Controller, Request, post
from litestar.exceptions import ClientException, HTTPException, ServiceUnavailableException

from pyloto_corp.adapters.dry_run_outbox import DryRunOutbox, RedisDryRunOutbox
from pyloto_corp.adapters.local_media import LocalMedia, store_local_media
from pyloto_corp.application.media_step import MEDIA_LIMITS
from pyloto_corp.http.deps import container_of, internal_token_guard

_MIME = re.compile(r"^(audio|image)/[a-z0-9][a-z0-9.+-]{0,62}$")
# The largest media the media step reads (a voice note), and one byte to tell it is larger.
MAX_MEDIA_BYTES = max(MEDIA_LIMITS.values())
_GRAPH = (
    "this server reads media and sends replies through the Graph API (WHATSAPP_ACCESS_TOKEN is set)"
)


class Conflict(HTTPException):
    """409: the request means nothing on this server."""

    status_code = 409


class RefuseSend(msgspec.Struct, forbid_unknown_fields=True):
    """Body of a refusal: the record whose reply's next send fails."""

    message_id: str


_refuse_decoder = msgspec.json.Decoder(RefuseSend)


class LocalDevController(Controller):
    """Local media uploads and dry-run send refusals, for `pyloto simulate`."""

    path = "/internal/local"
    guards = [internal_token_guard]  # noqa: RUF012

    @post("/media", status_code=200, request_max_body_size=MAX_MEDIA_BYTES + 1)
    async def media(self, request: Request[Any, Any, Any]) -> dict[str, str]:
        """Store the body as a new local media; its media id."""
        source = container_of(request).advancer.context.media
        if not isinstance(source, LocalMedia):
            raise Conflict(f"{_GRAPH}: send the media from WhatsApp instead")
        mime_type = request.headers.get("content-type", "").strip()
        readable = len(mime_type) <= 100 and mime_type.isascii() and mime_type.isprintable()
        if not (readable and _MIME.match(mime_type.split(";")[0].strip().lower())):
            raise ClientException("Content-Type must be the media's audio/… or image/… type")
        data = await request.body()
        if not data:
            raise ClientException("the body is the media file's bytes: it is empty")
        try:
            media_id = await asyncio.to_thread(store_local_media, source.folder, data, mime_type)
        except OSError as error:
            raise ServiceUnavailableException(
                f"cannot write to WHATSAPP_LOCAL_MEDIA_DIR: {error.strerror}"
            ) from None
        return {"media_id": media_id}

    @post("/refuse-send", status_code=200)
    async def refuse_send(self, request: Request[Any, Any, Any]) -> dict[str, str]:
        """Make the next send of the reply to `message_id` fail permanently."""
        outbox = container_of(request).outbox
        if not isinstance(outbox, DryRunOutbox | RedisDryRunOutbox):
            raise Conflict(f"{_GRAPH}: only a dry-run server can refuse a send")
        try:
            data = _refuse_decoder.decode(await request.body())
        except msgspec.DecodeError as error:
            raise ClientException(f"invalid body: {error}") from None
        if not 0 < len(data.message_id) <= 512:
            raise ClientException("message_id must be 1 to 512 characters")
        outbox.refusals.refuse(data.message_id)
        return {"refused": "next send"}
