"""create_app: the Litestar application around a container."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Litestar, MediaType, Request, Response
from litestar.datastructures import State
from litestar.exceptions import HTTPException

from pyloto_corp.application.ports import (
    QueueUnavailable,
    StoreUnavailable,
    TransientStepError,
)
from pyloto_corp.bootstrap import Container
from pyloto_corp.http.conversations import ConversationController
from pyloto_corp.http.health import health, ready
from pyloto_corp.http.internal import InternalController
from pyloto_corp.http.local_dev import LocalDevController
from pyloto_corp.http.ops import OpsController
from pyloto_corp.http.ops_inbox import InboxController
from pyloto_corp.http.ops_off import console_off
from pyloto_corp.http.ops_queues import QueuesController
from pyloto_corp.http.rejections import Rejections
from pyloto_corp.http.webhook import webhook

log = logging.getLogger(__name__)


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(
        {"status_code": status, "detail": detail},
        status_code=status,
        media_type=MediaType.JSON,
        headers=headers,
    )


def _unavailable(_: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    log.error(
        "dependency_unavailable", extra={"event": "dependency_unavailable", "error": str(error)}
    )
    return _error(503, "temporarily unavailable, retry later", {"Retry-After": "5"})


def _retry_later(_: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    return _error(503, f"step will be retried: {error}", {"Retry-After": "5"})


def _http(_: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    assert isinstance(error, HTTPException)
    return _error(error.status_code, error.detail, error.headers)


def _internal(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    # The route, not the path: a path may hold a wamid, which encodes the sender's number.
    route = str(request.scope.get("path_template", "?"))
    log.exception("unhandled_error", extra={"event": "unhandled_error", "route": route})
    return _error(500, "internal error")


def create_app(container: Container) -> Litestar:
    """The HTTP app; the container's workers start and stop with it."""
    handlers: list[Any] = [
        webhook,
        InternalController,
        LocalDevController,
        ConversationController,
        health,
        ready,
    ]
    if container.settings.app.ops_console_enabled:
        handlers.extend([OpsController, InboxController, QueuesController])
    else:
        handlers.append(console_off)
    return Litestar(
        route_handlers=handlers,
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
            StoreUnavailable: _unavailable,
            QueueUnavailable: _unavailable,
            TransientStepError: _retry_later,
            HTTPException: _http,
            Exception: _internal,
        },
        openapi_config=None,
        logging_config=None,
    )
