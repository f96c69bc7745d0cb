"""Shared pieces of the HTTP layer: the container lookup and the /internal guards (who the
caller is: http/principal.py)."""

from __future__ import annotations

import hmac
import logging
from urllib.parse import unquote_to_bytes

from litestar.connection import ASGIConnection
from litestar.exceptions import (
    NotAuthorizedException,
    PermissionDeniedException,
    ServiceUnavailableException,
)
from litestar.handlers.base import BaseRouteHandler

from pyloto_corp.adapters.google_oidc import CertsUnavailable, InvalidToken, OidcVerifier
from pyloto_corp.application.accounts import OPERATOR
from pyloto_corp.bootstrap import Container
from pyloto_corp.http.principal import require_role

log = logging.getLogger(__name__)


def container_of(connection: ASGIConnection) -> Container:  # type: ignore[type-arg]
    """The container this app was built with."""
    container: Container = connection.app.state.container
    return container


def path_message_id(connection: ASGIConnection, prefix: str) -> str:  # type: ignore[type-arg]
    """The message id after `prefix` in the request's path, percent-decoded once.

    WhatsApp ids are standard base64, so `/`, `+` and `=` occur. They are read from the raw
    path (ASGI `raw_path`): the decoded path has `%2F` already turned into `/`, and the
    router folds `//` into `/`, which would name another message. `+` stays `+`.
    """
    raw: bytes | None = connection.scope.get("raw_path")
    if raw:
        text = raw.decode("latin-1")
        _, found, encoded = text.partition(prefix)
        if found:
            return unquote_to_bytes(encoded).decode("utf-8", errors="replace")
    # A server that gives no raw path: the route's path parameter, as decoded.
    return str(connection.path_params.get("message_id", "")).removeprefix("/")


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


# Marks the routes Cloud Tasks and Cloud Scheduler call (`opt=TASK_ROUTE`): they accept the
# machine's credential only (the OIDC token when configured, else X-Internal-Token), never a
# person's session, so no one at the console can run a step or dead-letter a record by hand.
TASK_ROUTE = {"task_route": True}

# Every other /internal route: the token, or a person signed in with at least this role
# (a route asks for more with `guards=[require_role("agent")]`).
_people = require_role(OPERATOR)


async def internal_guard(
    connection: ASGIConnection,  # type: ignore[type-arg]
    handler: BaseRouteHandler,
) -> None:
    """Guard of /internal: task routes take the OIDC token when configured, else the token;
    the others the token or a console session (a person's POSTs with their CSRF token)."""
    if handler.opt.get("task_route"):
        verifier = container_of(connection).oidc_verifier
        if verifier is None:
            internal_token_guard(connection, handler)
        else:
            await _oidc_bearer(connection, verifier)
        return
    if connection.headers.get("x-internal-token"):
        internal_token_guard(connection, handler)
        return
    await _people(connection, handler)


async def _oidc_bearer(
    connection: ASGIConnection,  # type: ignore[type-arg]
    verifier: OidcVerifier,
) -> None:
    """401 without `Authorization: Bearer`, 403 with an invalid token, 503 (so the queue
    retries) when Google's keys cannot be fetched."""
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise NotAuthorizedException("missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    try:
        await verifier.verify(token)
    except InvalidToken as error:
        log.warning("oidc_rejected", extra={"event": "oidc_rejected", "reason": error.reason})
        raise PermissionDeniedException("invalid OIDC token") from None
    except CertsUnavailable as error:
        log.error(
            "oidc_certs_unavailable",
            extra={"event": "oidc_certs_unavailable", "error": str(error)},
        )
        raise ServiceUnavailableException(
            "cannot check the token now, retry later", headers={"Retry-After": "5"}
        ) from None
