"""Who is calling: a `Principal`, and the guards that ask for a role.

Three kinds of caller:

- `token`: a machine with X-Internal-Token (name "token", role operator). The task routes
  (TASK_ROUTE in deps.py) accept only this or Cloud Tasks' OIDC token, never a person.
- `session`: a person signed in to the console (an account of `pyloto users`), by the
  session cookie; posts must carry the session's CSRF token.
- `iap`: a person Cloud Run IAP let through (OPS_TRUST_IAP), whose signed assertion names an
  existing account; the account's role applies.

`principal_of(connection)` finds the caller once per request (the session lookup is a read
of the state store) and `require_role("agent")` is a Litestar guard for any route. `audit`
is the one log line of a person's action: it names the account by a ref, never in clear.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from pyloto_corp.adapters.google_oidc import CertsUnavailable, InvalidToken
from pyloto_corp.application.accounts import (
    OPERATOR,
    AccountError,
    Session,
    account_name,
    account_ref,
    check_role,
    role_includes,
)
from pyloto_corp.bootstrap import Container
from pyloto_corp.http.ops_auth import COOKIE, ConsoleKeys

log = logging.getLogger(__name__)

PrincipalKind = Literal["token", "session", "iap"]
Guard = Callable[[ASGIConnection, BaseRouteHandler], Awaitable[None]]  # type: ignore[type-arg]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "x-csrf-token"
_CACHE = "pyloto_principal"
_NONE = object()


@dataclass(frozen=True)
class Principal:
    """The caller of one request. `csrf`: what its posts must carry (None for the token);
    `session`: the console session it came with (None unless kind is `session`)."""

    name: str
    role: str
    kind: PrincipalKind
    csrf: str | None = None
    session: Session | None = None

    def may(self, role: str) -> bool:
        """Whether this principal has `role` (agent includes operator)."""
        return role_includes(self.role, role)

    @property
    def ref(self) -> str:
        """The principal in a log line: its kind and a ref of its name."""
        return "token" if self.kind == "token" else f"{self.kind}:{account_ref(self.name)}"


TOKEN = Principal("token", OPERATOR, "token")


def _container(connection: ASGIConnection) -> Container:  # type: ignore[type-arg]
    container: Container = connection.app.state.container
    return container


def console_keys(connection: ASGIConnection) -> ConsoleKeys:  # type: ignore[type-arg]
    """The sealing keys of this app's internal token, built once."""
    state = connection.app.state
    keys: ConsoleKeys | None = state.get("ops_keys")
    if keys is None:
        keys = ConsoleKeys(_container(connection).settings.internal_task_token)
        state["ops_keys"] = keys
    return keys


def token_matches(connection: ASGIConnection, given: str) -> bool:  # type: ignore[type-arg]
    """Whether `given` is the internal token (constant-time)."""
    expected = _container(connection).settings.internal_task_token
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode())


def known_principal(connection: ASGIConnection) -> Principal | None:  # type: ignore[type-arg]
    """The principal `principal_of` found for this request already, else None (for code
    that cannot await, an exception handler)."""
    cached = connection.scope.get("state", {}).get(_CACHE)
    return cached if isinstance(cached, Principal) else None


async def principal_of(connection: ASGIConnection) -> Principal | None:  # type: ignore[type-arg]
    """The caller: the token's machine, an IAP-signed person or a console session; None when
    no credential is valid. Worked out once per request."""
    cached = connection.scope.get("state", {}).get(_CACHE)
    if cached is _NONE:
        return None
    if isinstance(cached, Principal):
        return cached
    principal = await _find(connection)
    connection.scope.setdefault("state", {})[_CACHE] = _NONE if principal is None else principal
    return principal


async def _find(connection: ASGIConnection) -> Principal | None:  # type: ignore[type-arg]
    given = connection.headers.get("x-internal-token")
    if given:
        return TOKEN if token_matches(connection, given) else None
    container = _container(connection)
    if container.iap_verifier is not None:
        assertion = connection.headers.get("x-goog-iap-jwt-assertion")
        if assertion:
            return await _iap(connection, assertion)
    accounts = container.accounts
    if accounts is None:
        return None
    session = await accounts.session(connection.cookies.get(COOKIE))
    if session is None:
        return None
    return Principal(session.name, session.role, "session", session.csrf, session)


async def _iap(connection: ASGIConnection, assertion: str) -> Principal | None:  # type: ignore[type-arg]
    """The account IAP's assertion names, if it verifies and the account exists."""
    container = _container(connection)
    assert container.iap_verifier is not None
    try:
        claims = await container.iap_verifier.verify(assertion)
    except InvalidToken as error:
        log.warning("iap_rejected", extra={"event": "iap_rejected", "reason": error.reason})
        return None
    except CertsUnavailable as error:
        log.error(
            "iap_keys_unavailable", extra={"event": "iap_keys_unavailable", "error": str(error)}
        )
        return None
    header = connection.headers.get("x-goog-authenticated-user-email", "")
    email = str(claims["email"])
    if header and header.rpartition(":")[2].lower() != email.lower():
        log.warning("iap_rejected", extra={"event": "iap_rejected", "reason": "header mismatch"})
        return None
    try:
        name = account_name(email)
    except AccountError:
        return None
    account = await container.accounts.store.get_account(name) if container.accounts else None
    if account is None:
        log.warning("iap_unknown_account", extra={"event": "iap_unknown_account"})
        return None
    return Principal(name, account.role, "iap", console_keys(connection).iap_csrf(name))


def own_origin(connection: ASGIConnection) -> str:  # type: ignore[type-arg]
    """This service's origin as the browser sees it (scheme://host)."""
    scheme = connection.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    scheme = scheme or connection.url.scheme
    return f"{scheme}://{connection.headers.get('host', '').lower()}"


def foreign_origin(connection: ASGIConnection) -> bool:  # type: ignore[type-arg]
    """Whether the request names an Origin other than this service's own (`null`, another
    host or another scheme are all foreign); a request without Origin is not."""
    origin = connection.headers.get("origin")
    if origin is None:
        return False
    parts = urlsplit(origin.strip().lower())
    return f"{parts.scheme}://{parts.netloc}" != own_origin(connection) or parts.path not in (
        "",
        "/",
    )


def csrf_matches(principal: Principal, given: str | None) -> bool:
    """Whether `given` is the CSRF token of `principal`'s session (constant-time)."""
    if not given or principal.csrf is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), principal.csrf.encode())


def require_role(role: str) -> Guard:
    """A guard: 401 without a principal, 403 without `role`, and for a person's POST (not
    the token's) 403 from a foreign origin or without the session's CSRF token in the
    X-CSRF-Token header. Console pages answer the 401 with their sign-in form."""
    check_role(role)

    async def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:  # type: ignore[type-arg]
        principal = await principal_of(connection)
        if principal is None:
            raise NotAuthorizedException("sign in to the console, or give X-Internal-Token")
        if not principal.may(role):
            raise PermissionDeniedException(f"this needs the role {role}")
        if principal.kind != "token" and connection.scope.get("method", "GET") not in SAFE_METHODS:
            if foreign_origin(connection):
                raise PermissionDeniedException("this request came from another site")
            if not csrf_matches(principal, connection.headers.get(CSRF_HEADER)):
                raise PermissionDeniedException("missing or wrong X-CSRF-Token")

    return guard


def audit(principal: Principal, action: str, **fields: Any) -> None:
    """Log that `principal` did `action` (a fixed word; `fields` hold no personal data).
    The account's name is in `principal.name` for an audit trail kept elsewhere."""
    extra = {"event": "audit", "action": action, "principal": principal.ref, **fields}
    log.info("audit: %s", action, extra={**extra, "role": principal.role})
