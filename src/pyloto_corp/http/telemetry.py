"""The webhook POST as a server span and a latency sample, whatever its outcome."""

from __future__ import annotations

import time

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from opentelemetry.trace import SpanKind, Status, StatusCode

from pyloto_corp.bootstrap import Container


class WebhookTelemetry:
    """ASGI middleware of the webhook route: one span per POST (its children are the
    messages it carried) and `pyloto.webhook.duration` by status, for the latency and
    error-rate alerts. Rejected requests (401, 403, 413, 400, 503) are measured too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        container: Container = scope["litestar_app"].state.container
        telemetry = container.telemetry
        status = 500  # unless a response starts: the connection failed mid-request
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        attributes = {"http.request.method": "POST", "http.route": "/webhook"}
        with telemetry.span("POST /webhook", kind=SpanKind.SERVER, attributes=attributes) as span:
            try:
                await self.app(scope, receive, send_status)
            finally:
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
                telemetry.metrics.webhook_duration.record(
                    (time.perf_counter() - started) * 1000, {"http.response.status_code": status}
                )
