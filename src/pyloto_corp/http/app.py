"""create_app: the Litestar application around a container."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Litestar, MediaType, Request, Response
from litestar.datastructures import State
from litestar.exceptions import HTTPException

from pyloto_corp.adapters.whatsapp_webhook import InvalidWebhook
from pyloto_corp.application.ingest import BadSignature, MissingSignature
from pyloto_corp.application.ports import (
    QueueUnavailable,
    StoreUnavailable,
    TransientStepError,
)
from pyloto_corp.bootstrap import Container
from pyloto_corp.http.health import health, ready
from pyloto_corp.http.internal import InternalController
from pyloto_corp.http.rejections import Rejections
from pyloto_corp.http.webhook import WebhookController

log = logging.getLogger(__name__)


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(
        {"status_code": status, "detail": detail},
        status_code=status,
        media_type=MediaType.JSON,
        headers=headers,
    )


def _rejected(request: Request[Any, Any, Any], reason: str, status: int, detail: str = "") -> None:
    rejections: Rejections = request.app.state.rejections
    rejections.note(reason, status, detail)


def _missing_signature(request: Request[Any, Any, Any], __: Exception) -> Response[Any]:
    _rejected(request, "missing_signature", 401)
    return _error(401, "missing X-Hub-Signature-256")


def _bad_signature(request: Request[Any, Any, Any], __: Exception) -> Response[Any]:
    _rejected(request, "bad_signature", 403)
    return _error(403, "invalid X-Hub-Signature-256")


def _invalid(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    _rejected(request, "invalid_body", 400, str(error))
    return _error(400, str(error))


def _unavailable(_: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    log.error(
        "dependency_unavailable", extra={"event": "dependency_unavailable", "error": str(error)}
    )
    return _error(503, "temporarily unavailable, retry later", {"Retry-After": "5"})


def _retry_later(_: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    return _error(503, f"step will be retried: {error}", {"Retry-After": "5"})


# Refusals of Meta's route that Litestar or the verification raise as HTTP errors.
_WEBHOOK_REFUSALS = {413: "too_large", 403: "verification_failed"}


def _http(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    assert isinstance(error, HTTPException)
    reason = _WEBHOOK_REFUSALS.get(error.status_code)
    if reason is not None and request.scope.get("path_template") == "/webhook":
        _rejected(request, reason, error.status_code)
    return _error(error.status_code, error.detail, error.headers)


def _internal(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    # The route, not the path: a path may hold a wamid, which encodes the sender's number.
    route = str(request.scope.get("path_template", "?"))
    log.exception("unhandled_error", extra={"event": "unhandled_error", "route": route})
    return _error(500, "internal error")


def create_app(container: Container) -> Litestar:
    """The HTTP app; the container's workers start and stop with it."""
    return Litestar(
        route_handlers=[WebhookController, InternalController, health, ready],
        state=State(
            {
                "container": container,
                "rejections": Rejections(container.telemetry.metrics.webhook_rejections),
            }
        ),
        on_startup=[container.start],
        on_shutdown=[container.stop],
        request_max_body_size=container.settings.app.webhook_max_body_bytes,
        exception_handlers={
            MissingSignature: _missing_signature,
            BadSignature: _bad_signature,
            InvalidWebhook: _invalid,
            StoreUnavailable: _unavailable,
            QueueUnavailable: _unavailable,
            TransientStepError: _retry_later,
            HTTPException: _http,
            Exception: _internal,
        },
        openapi_config=None,
        logging_config=None,
    )
