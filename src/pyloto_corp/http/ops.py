"""The operations console under /ops (OPS_CONSOLE_ENABLED=true): the machine live, the
records, one message's timeline, and the replay of dead letters.

Access: an account's name and password (`pyloto users add`), posted to /ops/login, open a
session in the state store and give its random id in an HttpOnly SameSite=Strict cookie
(application/signin.py); with Cloud Run IAP trusted, IAP's signed identity names the
account instead (http/principal.py). Without either every page answers 401 with the sign-in
form and the summary API a 401, never data. Sign-ins are limited per account and per client
address. Every POST that changes something carries the session's CSRF token and, when the
browser sends one, an Origin that is this service's own (never `null`).
"""

from __future__ import annotations

import asyncio
import calendar
import functools
import logging
import math
import time
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlencode

from litestar import Controller, MediaType, Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException
from litestar.types import ExceptionHandlersMap

from pyloto_corp.application.accounts import account_ref
from pyloto_corp.application.console import daily_costs, dashboard
from pyloto_corp.application.customer_search import NotAnId, find_customer
from pyloto_corp.application.inspect import record_view
from pyloto_corp.application.llm_steps import is_conversation_id
from pyloto_corp.application.ports import RecordQuery
from pyloto_corp.application.replay import REPLAY_BATCH, Replayer
from pyloto_corp.application.signin import SignInRefused
from pyloto_corp.bootstrap import Container
from pyloto_corp.domain.costs import Prices
from pyloto_corp.domain.outcome import since_text
from pyloto_corp.domain.privacy import message_ref, redact_text
from pyloto_corp.domain.records import FAILED_STATE, Record
from pyloto_corp.domain.statechart_layout import Layout, layout, render_svg
from pyloto_corp.http import ops_pages as pages
from pyloto_corp.http.deps import container_of
from pyloto_corp.http.ops_auth import COOKIE, ConsoleKeys
from pyloto_corp.http.principal import (
    Principal,
    audit,
    console_keys,
    csrf_matches,
    foreign_origin,
    known_principal,
    principal_of,
)
from pyloto_corp.http.rejections import Rejections

log = logging.getLogger(__name__)

PAGE_SIZE = 50
# A customer's records listed at once (their newest; the store reads them by its index).
CUSTOMER_RECORDS = 100
# After a replay the result page follows the replayed records this long at most, and this
# many of them (a replay of every dead letter shows the first ones), reading each by its id.
FOLLOW_SECONDS = 5.0
FOLLOW_AT_MOST = 20
FOLLOW_POLL_SECONDS = 0.2
_STATIC = {"ops.css": "text/css; charset=utf-8", "ops.js": "text/javascript; charset=utf-8"}
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: under no-referrer a browser posts its forms with
    # `Origin: null`, which the Origin check refuses; nothing leaves for another site.
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}


class SignInRequired(Exception):
    """No valid session: the sign-in page (or a 401 for the API)."""


class Forbidden(Exception):
    """A POST without its CSRF token, or from another origin."""


class BadInput(Exception):
    """A request the console cannot read (a form, a link): 400 with the one-line reason."""


# More fields than any form of the console has (replay has four): refused unread.
MAX_FORM_FIELDS = 20


def _html(
    body: str,
    status: int = 200,
    cookies: list[Cookie] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[str]:
    return Response(
        body,
        status_code=status,
        media_type=MediaType.HTML,
        headers={**_HEADERS, **(headers or {})},
        cookies=cookies,
    )


def _https(request: Request[Any, Any, Any]) -> bool:
    """Whether the browser reached us over HTTPS (directly or through a proxy's TLS)."""
    return request.headers.get("x-forwarded-proto", request.url.scheme) == "https"


def _signin_required(request: Request[Any, Any, Any], _: Exception) -> Response[Any]:
    if request.url.path.startswith("/ops/api/"):
        return Response(
            {"status_code": 401, "detail": "sign in at /ops/login"},
            status_code=401,
            media_type=MediaType.JSON,
            headers=_HEADERS,
        )
    return _html(pages.signin(), 401)


def _forbidden(_: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    return _html(pages.page("Refused", f'<p class="error">{pages.e(error)}</p>'), 403)


def _denied(_: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    detail = error.detail if isinstance(error, HTTPException) else "refused"
    return _html(pages.page("Refused", f'<p class="error">{pages.e(detail)}</p>'), 403)


def _bad_input(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    principal = known_principal(request)  # signed in: the page keeps its navigation
    csrf = principal.csrf if principal is not None else None
    body = f'<h1>Bad request</h1><p class="error">{pages.e(error)}</p>'
    return _html(pages.page("Bad request", body, csrf=csrf), 400)


class _Console:
    """What one app's console needs, built once: keys, accounts, the statechart's drawing."""

    def __init__(self, container: Container, keys: ConsoleKeys) -> None:
        self.container = container
        self.keys = keys
        self.accounts = container.accounts
        self.client_hops = container.settings.console.client_address_hops
        self.layout: Layout = layout(container.chart)
        self.project = container.settings.queue.gcp_project
        # Anyone may post a guess: every refusal is counted, a few a minute are logged.
        self.refusals = Rejections(
            container.telemetry.metrics.ops_signin_refusals, event="ops_signin_refused"
        )


def prices_of(container: Container) -> Prices:
    """The prices the settings name (COST_*, LLM_PRICE_*, WHATSAPP_PRICE*)."""
    costs = container.settings.costs
    return Prices(
        input_per_million=costs.llm_input_per_million,
        output_per_million=costs.llm_output_per_million,
        per_billable=costs.whatsapp_per_billable,
        by_category=dict(costs.whatsapp_by_category),
        currency=costs.currency,
    )


def _console(request: Request[Any, Any, Any]) -> _Console:
    state = request.app.state
    console: _Console | None = state.get("ops_console")
    if console is None:
        console = _Console(container_of(request), console_keys(request))
        state["ops_console"] = console
    return console


async def _session(request: Request[Any, Any, Any]) -> tuple[_Console, Principal]:
    """The console and the signed-in person (a session or IAP), or SignInRequired. The
    machine's token does not open the console: its pages are for people."""
    console = _console(request)
    principal = await principal_of(request)
    if principal is None or principal.kind == "token":
        raise SignInRequired
    return console, principal


def _csrf(principal: Principal) -> str:
    """The CSRF token of a person's pages (every session and IAP principal has one)."""
    return principal.csrf or ""


def _client_address(request: Request[Any, Any, Any], hops: int) -> str:
    """The address the sign-in limit counts: the peer, or the `hops`-th X-Forwarded-For
    entry from the right (the one the nearest trusted proxy saw)."""
    if hops:
        entries = [e.strip() for e in request.headers.get("x-forwarded-for", "").split(",")]
        if len(entries) >= hops and entries[-hops]:
            return entries[-hops]
    return request.client.host if request.client else "unknown"


async def _form(request: Request[Any, Any, Any]) -> dict[str, str]:
    body = await request.body()
    try:
        fields = parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=MAX_FORM_FIELDS)
    except ValueError:  # the only one parse_qs raises unless strict: too many fields
        raise BadInput(f"too many form fields (at most {MAX_FORM_FIELDS})") from None
    return {key: values[0] for key, values in fields.items()}


async def _post(request: Request[Any, Any, Any]) -> tuple[_Console, Principal, dict[str, str]]:
    """A signed-in POST with its CSRF token, from this service's own origin (or none):
    (console, principal, form)."""
    console, principal = await _session(request)
    if foreign_origin(request):
        raise Forbidden("this form was posted from another site")
    form = await _form(request)
    if not csrf_matches(principal, form.get("csrf")):
        raise Forbidden("the form is stale or forged (no valid CSRF token): reload the page")
    return console, principal, form


def _utc(value: str) -> float | None:
    """A `datetime-local` value (UTC) as epoch seconds; None if empty; ValueError if bad."""
    if not value:
        return None
    for shape in ("%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"):
        try:
            return float(calendar.timegm(time.strptime(value, shape)))
        except ValueError:
            continue
    raise ValueError(value)


@functools.cache
def _static_file(name: str) -> bytes:
    """One of the console's files in the package, read once (on its first request)."""
    return resources.files("pyloto_corp.http").joinpath("ops_static", name).read_bytes()


_STALE_LINK = "this page link is not valid (stale or edited): open the list from its first page"


def _cursor(console: _Console, sealed: object) -> tuple[float, str] | None:
    """The (last update, id) cursor a page link carried sealed; None for the first page;
    BadInput for anything else. Message links are sealed with the same keys, so a message's
    token opens too: it is refused by its shape, and its text (a wamid) is never quoted."""
    if not sealed:
        return None
    opened = console.keys.unseal(str(sealed))
    at, bar, message_id = (opened or "").partition("|")
    try:
        moment = float(at)
    except ValueError:
        moment = math.nan
    if not bar or not math.isfinite(moment):
        raise BadInput(_STALE_LINK)
    return moment, message_id


def _next_href(
    console: _Console, path: str, params: dict[str, str], after: tuple[float, str] | None
) -> str | None:
    """The link to the page after the one shown (None on the last), its cursor sealed."""
    if after is None:
        return None
    sealed = console.keys.seal(f"{after[0]!r}|{after[1]}")
    return pages.query_href(path, {**params, "before": sealed})


def _names(record: Record) -> tuple[str, ...]:
    return record.inbound.names


def _row(console: _Console, record: Record) -> dict[str, Any]:
    reason = record.fallback_reason
    if record.state == FAILED_STATE and record.failure_reason:
        reason = redact_text(record.failure_reason, _names(record))
    token = console.keys.seal(record.message_id)
    return {
        "ref": message_ref(record.message_id),
        "href": f"/ops/messages/{token}",
        "token": token,
        "state": record.state,
        "kind": record.inbound.kind,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "reason": reason,
        "unknown_since": _unknown_since(record),
    }


def _unknown_since(record: Record) -> str | None:
    """When the outcome of the record's send became unknown (UTC), while it is."""
    if record.outcome_unknown_since is None or record.state == "sent":
        return None
    return since_text(record.outcome_unknown_since)


def _settled(console: _Console, record: Record | None) -> bool:
    """Whether a replayed record has come to rest (gone, or in a terminal state)."""
    if record is None:
        return True
    spec = console.container.chart.states.get(record.state)
    return spec is not None and spec.terminal


async def _follow(console: _Console, message_ids: list[str], seconds: float) -> dict[str, Any]:
    """Each record as it is once all have come to rest, or after `seconds`: read by id."""
    store = console.container.store
    found: dict[str, Record | None] = {m: None for m in message_ids}
    waiting = list(message_ids)
    deadline = time.monotonic() + seconds
    while True:
        for message_id in waiting:
            found[message_id] = await store.get(message_id)
        waiting = [m for m in waiting if not _settled(console, found[m])]
        if not waiting or time.monotonic() >= deadline:
            return found
        await asyncio.sleep(FOLLOW_POLL_SECONDS)


def _outcome(console: _Console, message_id: str, record: Record | None) -> dict[str, Any]:
    """A replayed record's row on the result page: what became of it, in words."""
    token = console.keys.seal(message_id)
    row: dict[str, Any] = {
        "ref": message_ref(message_id),
        "href": f"/ops/messages/{token}",
        "token": token,
        "state": record.state if record is not None else "-",
        "reason": None,
    }
    if record is None:
        row["outcome"], row["running"] = "gone (purged)", False
    elif record.state == "sent":
        row["outcome"], row["running"] = "sent", False
    elif record.state == FAILED_STATE:
        row["outcome"], row["running"] = "failed again", False
        row["reason"] = _row(console, record)["reason"]
    elif _settled(console, record):
        row["outcome"], row["running"] = f"ended in {record.state}", False
    else:
        row["outcome"], row["running"] = f"still running (in {record.state})", True
    return row


def _follow_href(rows: list[dict[str, Any]]) -> str:
    """The page that shows the followed records as they are now (their sealed ids)."""
    return "/ops/replay/status?" + urlencode([("m", r["token"]) for r in rows])


async def _confirm_replay(
    container: Container, token: str, message_id: str | None, csrf: str
) -> Response[str]:
    """The confirmation page of a replay; for a record whose send's outcome is unknown, it
    says the reply may already have arrived, and its form confirms that too."""
    if message_id is None:
        failed = (await container.store.state_counts()).get(FAILED_STATE, 0)
        what = (
            f"Replay every dead letter ({failed} now; at most {REPLAY_BATCH} in one run)? "
            "Those whose send's outcome is unknown are left alone: replay each on its own."
        )
        return _html(pages.confirm_page(what, {"all": "1"}, csrf))
    what = f"Replay message {message_ref(message_id)}?"
    fields = {"message": token}
    record = await container.store.get(message_id)
    since = _unknown_since(record) if record is not None else None
    if since is not None:
        what = (
            f"Replay message {message_ref(message_id)}? Its send's outcome is unknown since "
            f"{since}: the reply may already have arrived, and replaying sends it once more."
        )
        fields["confirm_unknown"] = "yes"
    return _html(pages.confirm_page(what, fields, csrf, warning=since is not None))


# What every console page answers for a missing session, a refusal and bad input (the
# Inbox's and the Queues page's controllers take these too).
PAGE_ERRORS: ExceptionHandlersMap = {
    SignInRequired: _signin_required,
    Forbidden: _forbidden,
    BadInput: _bad_input,
}


class OpsController(Controller):
    """The console's pages, its summary API, sign-in and replay."""

    path = "/ops"
    exception_handlers = {  # noqa: RUF012
        **PAGE_ERRORS,
        # From a route's `require_role` guard (http/principal.py): the form, or a refusal.
        NotAuthorizedException: _signin_required,
        PermissionDeniedException: _denied,
    }

    @get("/static/{name:str}", media_type=MediaType.TEXT)
    async def static(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        """The console's stylesheet and script, shipped inside the package."""
        name = str(request.path_params["name"])
        kind = _STATIC.get(name)
        if kind is None:
            return Response(b"not found", status_code=404, media_type=MediaType.TEXT)
        return Response(
            _static_file(name),
            media_type=kind,
            headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"},
        )

    @get("/login")
    async def signin_form(self) -> Response[str]:
        """The sign-in form."""
        return _html(pages.signin())

    @post("/login", status_code=303)
    async def signin(self, request: Request[Any, Any, Any]) -> Response[str]:
        """Check the name and password; on success a new session's cookie and /ops."""
        console = _console(request)
        if foreign_origin(request):  # no signing a visitor in to someone else's account
            raise Forbidden("this form was posted from another site")
        form = await _form(request)
        if console.accounts is None:
            return _html(pages.signin("Sign-in is not available on this store."), 503)
        client = _client_address(request, console.client_hops)
        name = form.get("name", "")
        try:
            signed = await console.accounts.sign_in(name, form.get("password", ""), client)
        except SignInRefused as refused:
            ref = account_ref(name.strip().lower())
            if refused.rate_limited:
                console.refusals.note(refused.reason, 429, detail=f"account {ref}")
                wait = {"Retry-After": "60"}
                text = "Too many failed sign-ins: wait a few minutes and try again."
                return _html(pages.signin(text), 429, headers=wait)
            console.refusals.note(refused.detail, 401, detail=f"account {ref}")
            return _html(pages.signin("That name and password do not match an account."), 401)
        cookie = Cookie(
            key=COOKIE,
            value=signed.session_id,
            path="/",
            max_age=int(console.accounts.session_seconds),
            httponly=True,
            samesite="strict",
            secure=_https(request),
        )
        principal = Principal(signed.session.name, signed.session.role, "session")
        audit(principal, "signin")
        return Response(
            "", status_code=303, headers={**_HEADERS, "Location": "/ops"}, cookies=[cookie]
        )

    @post("/logout", status_code=303)
    async def signout(self, request: Request[Any, Any, Any]) -> Response[str]:
        """End the session (its cookie and CSRF token are refused from now on)."""
        console, principal, _ = await _post(request)
        if principal.session is not None and console.accounts is not None:
            await console.accounts.sign_out(principal.session)
        audit(principal, "signout")
        gone = Cookie(
            key=COOKIE,
            value="",
            path="/",
            max_age=0,
            httponly=True,
            samesite="strict",
            secure=_https(request),
        )
        return Response(
            "", status_code=303, headers={**_HEADERS, "Location": "/ops/login"}, cookies=[gone]
        )

    @get("/")
    async def machine(self, request: Request[Any, Any, Any]) -> Response[str]:
        """The live machine and the charts."""
        console, principal = await _session(request)
        board = await dashboard(console.container.store, console.container.chart, time.time())
        svg = render_svg(console.container.chart, board.counts, board.hour.taken, console.layout)
        return _html(pages.machine_page(board, svg, _csrf(principal)))

    @get("/api/summary")
    async def summary(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        """What the machine page polls."""
        console, _ = await _session(request)
        board = await dashboard(console.container.store, console.container.chart, time.time())
        return Response(pages.summary_json(board), media_type=MediaType.JSON, headers=_HEADERS)

    @get("/costs")
    async def costs(self, request: Request[Any, Any, Any]) -> Response[str]:
        """What the line costs, per UTC day: billable messages, tokens, priced."""
        console, principal = await _session(request)
        prices = prices_of(console.container)
        days = await daily_costs(console.container.store, prices, time.time())
        return _html(pages.costs_page(days, prices, _csrf(principal)))

    @get("/records")
    async def records(self, request: Request[Any, Any, Any]) -> Response[str]:
        """Records by state, fallback reason and time, newest first, a page at a time."""
        console, principal = await _session(request)
        params = {k: str(v) for k, v in request.query_params.items()}
        filters = {k: params.get(k, "") for k in ("state", "reason", "since", "until")}
        notice = None
        states = list(console.container.chart.states)
        state = filters["state"] or None
        if state is not None and state not in states:
            notice, state = f"unknown state {state!r}: showing every state", None
        try:
            since, until = _utc(filters["since"]), _utc(filters["until"])
        except ValueError:
            notice, since, until = (
                "dates are YYYY-MM-DDTHH:MM (UTC): time filter left out",
                None,
                None,
            )
        if "customer" in params:
            key = params["customer"]
            if not is_conversation_id(key):
                raise BadInput("this customer link is not valid (edited): search again")
            listed = await console.container.store.conversation_records(key, CUSTOMER_RECORDS)
            rows = [_row(console, r) for r in reversed(listed)]
            body = pages.records_page(rows, states, {}, None, _csrf(principal), customer=key)
            return _html(body)
        before = _cursor(console, params.get("before"))
        found = await console.container.store.list_records(
            RecordQuery(
                state=state,
                fallback_reason=filters["reason"] or None,
                since=since,
                until=until,
                before=before,
                limit=PAGE_SIZE,
            )
        )
        next_href = _next_href(console, "/ops/records", filters, found.next_before)
        rows = [_row(console, r) for r in found.records]
        csrf = _csrf(principal)
        return _html(pages.records_page(rows, states, filters, next_href, csrf, notice))

    @post("/search", status_code=303)
    async def search(self, request: Request[Any, Any, Any]) -> Response[str]:
        """Open a message by its wamid (posted, so the id is in no URL or access log)."""
        console, principal, form = await _post(request)
        csrf = _csrf(principal)
        if "customer" in form:
            return await _search_customer(console, csrf, form["customer"])
        message_id = form.get("id", "").strip()
        record = await console.container.store.get(message_id) if message_id else None
        if record is None:
            states = list(console.container.chart.states)
            body = pages.records_page([], states, {}, None, csrf, "No record with this id.")
            return _html(body, 404)
        href = f"/ops/messages/{console.keys.seal(message_id)}"
        return Response("", status_code=303, headers={**_HEADERS, "Location": href})

    @get("/replay/status")
    async def replay_status(self, request: Request[Any, Any, Any]) -> Response[str]:
        """The replayed records of a replay's result page, as they are now."""
        console, principal = await _session(request)
        tokens = [str(t) for t in request.query_params.getall("m", [])][:FOLLOW_AT_MOST]
        message_ids = [console.keys.unseal(t) for t in tokens]
        if not tokens or any(m is None for m in message_ids):
            raise BadInput("this link is not valid (stale or edited): open the dead letters")
        found = await _follow(console, [m for m in message_ids if m is not None], 0.0)
        rows = [_outcome(console, m, r) for m, r in found.items()]
        again = _follow_href(rows) if any(r["running"] for r in rows) else None
        return _html(pages.replay_status_page(rows, again, _csrf(principal)))

    @get("/messages/{token:str}")
    async def message(self, request: Request[Any, Any, Any]) -> Response[str]:
        """One message: facts, timeline, reply, failure, trace."""
        console, principal = await _session(request)
        token = str(request.path_params["token"])
        csrf = _csrf(principal)
        message_id = console.keys.unseal(token)
        record = await console.container.store.get(message_id) if message_id else None
        if record is None:
            return _html(pages.not_found_page("No record behind this link.", csrf), 404)
        view = record_view(record)
        view.pop("message_id", None)
        # The wamid Meta gave the reply encodes the customer's number: its reference only.
        outbound = view.pop("outbound_message_id", None)
        view["outbound_ref"] = message_ref(str(outbound)) if outbound else None
        reply = view.get("reply")
        context = reply.get("context") if isinstance(reply, dict) else None
        if isinstance(context, dict) and "message_id" in context:
            # The inbound wamid the reply quotes: it encodes the sender's number.
            context["message_id"] = f"ref:{message_ref(str(context['message_id']))}"
        traceparent = record.trace_context.get("traceparent", "")
        parts = traceparent.split("-")
        trace_id = parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None
        href = None
        if trace_id and console.project:
            href = (
                "https://console.cloud.google.com/traces/list"
                f"?project={console.project}&tid={trace_id}"
            )
        replay = token if record.state == FAILED_STATE else None
        return _html(pages.message_page(view, trace_id, href, csrf, replay_token=replay))

    @get("/dead-letters")
    async def dead_letters(self, request: Request[Any, Any, Any]) -> Response[str]:
        """Records in `failed`, newest first, with their reasons."""
        console, principal = await _session(request)
        before = _cursor(console, request.query_params.get("before"))
        found = await console.container.store.list_records(
            RecordQuery(state=FAILED_STATE, before=before, limit=PAGE_SIZE)
        )
        next_href = _next_href(console, "/ops/dead-letters", {}, found.next_before)
        rows = [_row(console, r) for r in found.records]
        return _html(pages.dead_letters_page(rows, next_href, _csrf(principal)))

    @post("/replay", status_code=200)
    async def replay(self, request: Request[Any, Any, Any]) -> Response[str]:
        """Ask for confirmation, then replay one dead letter or all (as `pyloto replay`)."""
        console, principal, form = await _post(request)
        csrf = _csrf(principal)
        container = console.container
        token = form.get("message", "")
        message_id = console.keys.unseal(token) if token else None
        if not form.get("all") and message_id is None:
            return _html(pages.not_found_page("No record behind this link.", csrf), 404)
        if form.get("confirm") != "yes":
            return await _confirm_replay(container, token, message_id, csrf)
        replayer = Replayer(container.advancer, container.store)
        if message_id is not None:
            confirmed = form.get("confirm_unknown") == "yes"
            summary = await replayer.replay(message_id, confirm_unknown=confirmed)
        else:
            summary = await replayer.replay_failed(None)
        log.warning(
            "ops_replay",
            extra={
                "event": "ops_replay",
                "replayed": len(summary.replayed),
                "skipped": len(summary.skipped),
            },
        )
        seal = console.keys.seal
        followed = summary.replayed[:FOLLOW_AT_MOST]
        found = await _follow(console, followed, FOLLOW_SECONDS)
        done = [_outcome(console, m, r) for m, r in found.items()]
        left = [
            (message_ref(m), f"/ops/messages/{seal(m)}", reason)
            for m, reason in summary.skipped.items()
        ]
        again = _follow_href(done) if any(r["running"] for r in done) else None
        unfollowed = len(summary.replayed) - len(followed)
        return _html(pages.replay_result_page(done, left, csrf, again, unfollowed))


async def _search_customer(console: _Console, csrf: str, typed: str) -> Response[str]:
    """Open a customer's records by their number or BSUID: hashed as the stores key them,
    and only the hash goes on, in the redirect (the typed text is in no URL, log or page)."""
    states = list(console.container.chart.states)
    container = console.container
    try:
        key = await find_customer(container.store, typed, container.settings.hash_key)
    except NotAnId as refused:
        body = pages.records_page([], states, {}, None, csrf, str(refused))
        return _html(body, 400)
    if key is None:
        notice = "No records for this phone number or BSUID."
        return _html(pages.records_page([], states, {}, None, csrf, notice), 404)
    href = pages.query_href("/ops/records", {"customer": key})
    return Response("", status_code=303, headers={**_HEADERS, "Location": href})
