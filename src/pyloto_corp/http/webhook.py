"""Meta's webhook: verification (GET) and delivery (POST)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.exceptions import PermissionDeniedException
from litestar.params import Parameter

from pyloto_corp.application.ingest import verify_signature
from pyloto_corp.http.deps import container_of


class WebhookController(Controller):
    """GET verifies the subscription; POST stores every message once and acknowledges."""

    path = "/webhook"

    @get(media_type="text/plain", sync_to_thread=False)
    def verify(
        self,
        request: Request[Any, Any, Any],
        mode: Annotated[str | None, Parameter(query="hub.mode")] = None,
        token: Annotated[str | None, Parameter(query="hub.verify_token")] = None,
        challenge: Annotated[str | None, Parameter(query="hub.challenge")] = None,
    ) -> str:
        """Echo the challenge when the verify token matches."""
        expected = container_of(request).settings.verify_token
        if mode != "subscribe" or not token or challenge is None or token != expected:
            raise PermissionDeniedException("verification failed")
        return challenge

    @post(status_code=200)
    async def receive(self, request: Request[Any, Any, Any]) -> Response[dict[str, int]]:
        """Verify the signature over the raw body (size-capped by the app), then ingest."""
        container = container_of(request)
        body = await request.body()
        signature = request.headers.get("x-hub-signature-256")
        verify_signature(body, signature, container.settings.app_secret)
        result = await container.ingestor.ingest(body)
        return Response(result.__dict__, status_code=200)

