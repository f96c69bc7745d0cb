"""Shared pieces of the HTTP layer: the container lookup and the internal token guard."""

from __future__ import annotations

import hmac

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from pyloto_corp.bootstrap import Container


def container_of(connection: ASGIConnection) -> Container:  # type: ignore[type-arg]
    """The container this app was built with."""
    container: Container = connection.app.state.container
    return container


def internal_token_guard(
    connection: ASGIConnection,  # type: ignore[type-arg]
    _: BaseRouteHandler,
) -> None:
    """401 without X-Internal-Token, 403 with a wrong one (constant-time compare)."""
    given = connection.headers.get("x-internal-token")
    if not given:
        raise NotAuthorizedException("missing X-Internal-Token")
    expected = container_of(connection).settings.internal_task_token
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise PermissionDeniedException("invalid X-Internal-Token")
