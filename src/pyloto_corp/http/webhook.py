"""Meta's webhook: verification (GET) and delivery (POST)."""

from __future__ import annotations

import hmac
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.exceptions import PermissionDeniedException

from pyloto_corp.adapters.whatsapp_webhook import parse_webhook
from pyloto_corp.application.ingest import verify_signature
from pyloto_corp.http.deps import container_of
from pyloto_corp.http.telemetry import WebhookTelemetry


class WebhookController(Controller):
    """GET verifies the subscription; POST stores every message once and acknowledges."""

    path = "/webhook"
    middleware = [WebhookTelemetry]  # noqa: RUF012

    @get(media_type="text/plain", sync_to_thread=False)
    def verify(self, request: Request[Any, Any, Any]) -> str:
        """Echo the challenge when the verify token matches."""
        query = request.query_params
        mode, token = query.get("hub.mode"), query.get("hub.verify_token")
        challenge = query.get("hub.challenge")
        expected = container_of(request).settings.verify_token.encode()
        if (
            mode != "subscribe"
            or not token
            or challenge is None
            or not hmac.compare_digest(token.encode(), expected)
        ):
            raise PermissionDeniedException("verification failed")
        return str(challenge)

    @post(status_code=200)
    async def receive(self, request: Request[Any, Any, Any]) -> Response[dict[str, int]]:
        """Verify the signature over the raw body (size-capped by the app), parse, ingest."""
        container = container_of(request)
        body = await request.body()
        signature = request.headers.get("x-hub-signature-256")
        verify_signature(body, signature, container.settings.app_secret)
        result = await container.ingestor.ingest(parse_webhook(body))
        return Response(result.__dict__, status_code=200)
