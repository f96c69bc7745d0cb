"""The agent inbox of the operations console, under /ops/inbox: the conversations waiting
for a person or owned by one, and one conversation's thread with Take over, Release and a
reply box (each a POST with the session's CSRF token, calling `Conversations`).

These are the console's only pages that show a customer's words (their messages in clear,
so an agent can answer them); every other page shows records masked. Nothing of what these
pages show is written to a log line or a span: the service's own log lines about a mode
change carry the conversation's keyed hash, the modes and the reason, never a text.

Who may open them is decided in one place, `inbox_principal`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from litestar import Controller, Request, Response, get, post

from pyloto_corp.application.conversations import (
    ConversationMissing,
    ConversationRefused,
    Conversations,
)
from pyloto_corp.application.llm_steps import is_conversation_id
from pyloto_corp.bootstrap import CONVERSATION_CHART_FILE, load_chart, statechart_dir
from pyloto_corp.domain.conversation import AGENT_REPLY_KIND, HUMAN, WAITING_HUMAN, Conversation
from pyloto_corp.domain.costs import conversation_cost
from pyloto_corp.domain.records import Record
from pyloto_corp.domain.statechart import Statechart
from pyloto_corp.domain.statechart_layout import Layout, layout, render_svg
from pyloto_corp.http import ops
from pyloto_corp.http import ops_pages as pages
from pyloto_corp.http.ops_pages import duration_text
from pyloto_corp.http.principal import Principal, known_principal

log = logging.getLogger(__name__)

# The pages that may show a customer's words: the inbox, and nothing else of the console.
CUSTOMER_WORDS_PREFIX = "/ops/inbox"
LISTED = 200  # conversations listed per mode
THREAD = 100  # records shown in one conversation's thread


async def inbox_principal(request: Request[Any, Any, Any]) -> Principal:
    """The one access check of the inbox: the signed-in agent (SignInRequired without a
    session, Forbidden for an account without the `agent` role: an operator sees the
    console's masked pages, never a customer's words). Their name acts in the audit trail."""
    _, principal = await ops._session(request)
    if not principal.may("agent"):
        raise ops.Forbidden("the inbox is for agents: this account's role is " + principal.role)
    return principal


def window_text(conversation: Conversation, now: float) -> str:
    """`window closes in 3 h 20 min`, or `window closed`."""
    closes = conversation.window_closes_at
    if not closes:
        return "no window (the customer never wrote)"
    if now >= closes:
        return "window closed"
    return f"window closes in {duration_text(closes - now)}"


class _Inbox:
    """What the inbox needs, built once per app: the conversation chart and its drawing."""

    def __init__(self) -> None:
        self.chart: Statechart = load_chart(statechart_dir() / CONVERSATION_CHART_FILE)
        self.layout: Layout = layout(self.chart)


def _inbox(request: Request[Any, Any, Any]) -> _Inbox:
    state = request.app.state
    inbox: _Inbox | None = state.get("ops_inbox")
    if inbox is None:
        inbox = _Inbox()
        state["ops_inbox"] = inbox
    return inbox


def _service(request: Request[Any, Any, Any]) -> Conversations:
    conversations = ops._console(request).container.conversations
    assert conversations is not None, "the container builds its conversations"
    return conversations


def _csrf(request: Request[Any, Any, Any]) -> str:
    """The signed-in agent's CSRF token (inbox_principal has found them)."""
    principal = known_principal(request)
    return (principal.csrf or "") if principal is not None else ""


def _key(request: Request[Any, Any, Any]) -> str | None:
    key = str(request.path_params["conversation_id"])
    return key if is_conversation_id(key) else None


def chart_svg(inbox: _Inbox, waiting: int, owned: int) -> str:
    """The conversation statechart with the conversations waiting and owned now (the bot's
    count is not kept: a dot)."""
    counts = {"bot": "·", WAITING_HUMAN: waiting, HUMAN: owned}
    return render_svg(
        inbox.chart,
        counts,
        None,
        inbox.layout,
        svg_id="conversation-chart",
        caption="conversations waiting for a person and owned by one now",
    )


def _entries(records: Sequence[Record]) -> list[dict[str, Any]]:
    """The thread: each customer message, the bot's reply to it, each agent's reply."""
    out: list[dict[str, Any]] = []
    for record in records:
        inbound = record.inbound
        if inbound.kind == AGENT_REPLY_KIND:
            out.append(
                {
                    "who": "agent",
                    "text": inbound.text or "",
                    "at": record.created_at,
                    "state": record.state,
                }
            )
            continue
        out.append(
            {
                "who": "customer",
                "text": inbound.text or f"({inbound.kind})",
                "at": record.created_at,
                "state": record.state,
                "kind": inbound.kind,
            }
        )
        said = _reply_text(record.reply)
        if said is not None:
            out.append({"who": "bot", "text": said, "at": record.updated_at, "state": record.state})
    return out


def _reply_text(reply: dict[str, Any] | None) -> str | None:
    """What the bot's reply says: a text's body, or the template it used."""
    if not reply:
        return None
    kind = reply.get("type")
    part = reply.get(str(kind)) if kind else None
    if kind == "text" and isinstance(part, dict):
        return str(part.get("body", ""))
    if kind == "template" and isinstance(part, dict):
        return f"(template {part.get('name', '?')})"
    if kind == "interactive" and isinstance(part, dict):
        body = part.get("body")
        if isinstance(body, dict) and "text" in body:
            return str(body["text"])
    return f"({kind} message)" if kind else None


async def _conversation_page(
    request: Request[Any, Any, Any],
    key: str,
    notice: str | None = None,
    status: int = 200,
    draft: str = "",
) -> Response[str]:
    service = _service(request)
    csrf = _csrf(request)
    try:
        conversation = await service.get(key)
    except ConversationMissing:
        return _no_store(pages.not_found_page("No conversation with this id.", csrf), 404)
    now = service.clock()
    container = ops._console(request).container
    records = await container.store.conversation_records(key, THREAD)
    cost = conversation_cost(records, ops.prices_of(container))
    body = pages.conversation_page(
        conversation=conversation,
        entries=_entries(records),
        window=window_text(conversation, now),
        window_open=conversation.window_open(now),
        in_mode=duration_text(now - conversation.since) if conversation.since else "-",
        csrf=csrf,
        notice=notice,
        draft=draft,
        cost=pages.conversation_cost_card(cost, ops.prices_of(container)),
    )
    return _no_store(body, status)


def _no_store(body: str, status: int = 200) -> Response[str]:
    return ops._html(body, status)  # the console's headers: Cache-Control: no-store


def _back(key: str) -> Response[str]:
    return Response(
        "",
        status_code=303,
        headers={**ops._HEADERS, "Location": f"{CUSTOMER_WORDS_PREFIX}/{key}"},
    )


class InboxController(Controller):
    """The inbox list, one conversation, and the agent's actions on it."""

    path = CUSTOMER_WORDS_PREFIX
    exception_handlers = ops.PAGE_ERRORS

    @get("/")
    async def inbox(self, request: Request[Any, Any, Any]) -> Response[str]:
        """Conversations waiting for a person and owned by one, the longest waiting first."""
        await inbox_principal(request)
        service = _service(request)
        now = service.clock()
        store = service.store
        waiting = await store.list_conversations(WAITING_HUMAN, LISTED)
        owned = await store.list_conversations(HUMAN, LISTED)
        rows = [
            {
                "id": c.key,
                "mode": c.mode,
                "waiting": duration_text(now - c.since) if c.since else "-",
                "owner": c.owner,
                "window": window_text(c, now),
                "window_open": c.window_open(now),
            }
            for c in sorted([*waiting, *owned], key=lambda c: c.since)
        ]
        svg = chart_svg(_inbox(request), len(waiting), len(owned))
        return _no_store(pages.inbox_page(rows, svg, _csrf(request)))

    @get("/{conversation_id:str}")
    async def conversation(self, request: Request[Any, Any, Any]) -> Response[str]:
        """One conversation: its thread in clear, its mode, window, audit trail, actions."""
        await inbox_principal(request)
        key = _key(request)
        if key is None:
            return _no_store(
                pages.not_found_page("No conversation with this id.", _csrf(request)), 404
            )
        return await _conversation_page(request, key)

    @post("/{conversation_id:str}/takeover", status_code=303)
    async def take_over(self, request: Request[Any, Any, Any]) -> Response[str]:
        """Take the conversation over: the bot is silent until it is released."""
        return await _act(request, "takeover")

    @post("/{conversation_id:str}/release", status_code=303)
    async def release(self, request: Request[Any, Any, Any]) -> Response[str]:
        """Give the conversation back to the bot."""
        return await _act(request, "release")

    @post("/{conversation_id:str}/reply", status_code=303)
    async def reply(self, request: Request[Any, Any, Any]) -> Response[str]:
        """Send the agent's reply (taking the conversation over first when needed)."""
        return await _act(request, "reply")


async def _act(request: Request[Any, Any, Any], action: str) -> Response[str]:
    """Run one action; back to the conversation's page (303), or the page again with the
    refusal (409), the bad input (400) or not found (404)."""
    who = (await inbox_principal(request)).name
    _, _, form = await ops._post(request)  # this host, the session's CSRF token
    key = _key(request)
    if key is None:
        return _no_store(pages.not_found_page("No conversation with this id.", _csrf(request)), 404)
    service = _service(request)
    text = form.get("text", "")
    try:
        if action == "takeover":
            await service.take_over(key, who)
        elif action == "release":
            await service.release(key, who)
        else:
            await service.reply(key, who, text)
    except ConversationMissing:
        return _no_store(pages.not_found_page("No conversation with this id.", _csrf(request)), 404)
    except ConversationRefused as refused:
        return await _conversation_page(request, key, f"Refused: {refused}", 409, text)
    except ValueError as bad:
        return await _conversation_page(request, key, f"Not sent: {bad}", 400, text)
    log.info("ops_inbox_action", extra={"event": "ops_inbox_action", "action": action})
    return _back(key)
