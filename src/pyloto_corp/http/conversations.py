"""/internal/conversations: a helpdesk's (or the console's) way into conversations.

Authenticated like the other internal routes. The token caller sees no personal data: the
last turns are kept masked (as LLM#2 reads them); only the agent inbox shows the customer's
words, to a signed-in agent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.connection import ASGIConnection
from litestar.exceptions import (
    ClientException,
    HTTPException,
    NotFoundException,
    PermissionDeniedException,
)
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath

from pyloto_corp.application.conversations import (
    ConversationMissing,
    ConversationRefused,
    Conversations,
)
from pyloto_corp.application.llm_steps import (
    CONVERSATION_TURNS,
    CONVERSATION_WINDOW_SECONDS,
    is_conversation_id,
)
from pyloto_corp.domain.conversation import MODES, Conversation
from pyloto_corp.http.deps import container_of, internal_guard
from pyloto_corp.http.principal import known_principal, principal_of

MAX_LIST = 500


class AgentMessage(msgspec.Struct, forbid_unknown_fields=True):
    """Body of POST /internal/conversations/{id}/messages."""

    text: str


_message_decoder = msgspec.json.Decoder(AgentMessage)


class ConflictException(HTTPException):
    status_code = 409


def caller(request: Request[Any, Any, Any]) -> str:
    """Who acts, for the audit trail: the signed-in account, else the machine token."""
    principal = known_principal(request)
    return principal.name if principal is not None else "token"


async def agents_or_machine(
    connection: ASGIConnection,  # type: ignore[type-arg]
    _: BaseRouteHandler,
) -> None:
    """After the internal guard: a person needs the `agent` role (an operator never reads
    or answers conversations); the machine token (a helpdesk) may."""
    principal = await principal_of(connection)
    if principal is not None and principal.kind != "token" and not principal.may("agent"):
        raise PermissionDeniedException("the conversations are for agents")


def _service(request: Request[Any, Any, Any]) -> Conversations:
    conversations = container_of(request).conversations
    assert conversations is not None, "the container builds its conversations"
    return conversations


def _key(conversation_id: str) -> str:
    if not is_conversation_id(conversation_id):
        raise NotFoundException("no conversation with this id")
    return conversation_id


def conversation_view(conversation: Conversation, now: float) -> dict[str, Any]:
    """The conversation as JSON-ready data (no personal data: the key is a keyed hash, the
    owner an account name)."""
    closes = conversation.window_closes_at
    return {
        "id": conversation.key,
        "mode": conversation.mode,
        "since": conversation.since or None,
        "reason": conversation.reason or None,
        "owner": conversation.owner or None,
        "customer_at": conversation.customer_at or None,
        "window_closes_at": closes or None,
        "window_open": conversation.window_open(now),
        "agent_at": conversation.agent_at or None,
        "version": conversation.version,
        "last_message": conversation.last_message or None,
    }


class ConversationController(Controller):
    """List, read, take over, release and answer conversations."""

    path = "/internal/conversations"
    guards = [internal_guard, agents_or_machine]  # noqa: RUF012

    @get("/")
    async def list_conversations(self, request: Request[Any, Any, Any]) -> dict[str, Any]:
        """Conversations in `?mode=` (any when absent), the longest waiting first, at most
        `?limit=` (100)."""
        mode = request.query_params.get("mode") or None
        if mode is not None and mode not in MODES:
            raise ClientException(f"mode must be one of {', '.join(MODES)}")
        given = request.query_params.get("limit", "100")
        limit = int(given) if given.isascii() and given.isdigit() and len(given) < 5 else 0
        if not 1 <= limit <= MAX_LIST:
            raise ClientException(f"limit must be between 1 and {MAX_LIST}")
        service = _service(request)
        now = service.clock()
        found = await service.store.list_conversations(mode, limit)
        items = []
        for conversation in found:
            view = conversation_view(conversation, now)
            view["waiting_seconds"] = (
                round(now - conversation.since, 1) if conversation.since else None
            )
            items.append(view)
        return {"conversations": items}

    @get("/{conversation_id:str}")
    async def show(
        self, request: Request[Any, Any, Any], conversation_id: FromPath[str]
    ) -> dict[str, Any]:
        """The conversation, its audit trail and its last turns (masked)."""
        service = _service(request)
        key = _key(conversation_id)
        try:
            conversation = await service.get(key)
        except ConversationMissing as missing:
            raise NotFoundException(str(missing)) from None
        now = service.clock()
        memory = container_of(request).store
        turns = await memory.recent_turns(
            key, now - CONVERSATION_WINDOW_SECONDS, CONVERSATION_TURNS
        )
        view = conversation_view(conversation, now)
        view["audit"] = [{"at": e.at, "who": e.who, "action": e.action} for e in conversation.audit]
        view["turns"] = [{"role": t.role, "text": t.text, "at": t.at} for t in turns]
        return view

    @post("/{conversation_id:str}/takeover", status_code=200)
    async def take_over(
        self, request: Request[Any, Any, Any], conversation_id: FromPath[str]
    ) -> dict[str, Any]:
        return await _move(request, conversation_id, _service(request).take_over)

    @post("/{conversation_id:str}/release", status_code=200)
    async def release(
        self, request: Request[Any, Any, Any], conversation_id: FromPath[str]
    ) -> dict[str, Any]:
        return await _move(request, conversation_id, _service(request).release)

    @post("/{conversation_id:str}/messages", status_code=202)
    async def reply(
        self, request: Request[Any, Any, Any], conversation_id: FromPath[str]
    ) -> dict[str, str]:
        """Queue an agent's reply: 202 with the id of the record that sends it."""
        try:
            data = _message_decoder.decode(await request.body())
        except msgspec.DecodeError as error:
            raise ClientException(f'invalid body: {error}; give {{"text": "..."}}') from None
        with _answers():
            message_id = await _service(request).reply(
                _key(conversation_id), caller(request), data.text
            )
        return {"message_id": message_id}


async def _move(
    request: Request[Any, Any, Any],
    conversation_id: str,
    action: Callable[[str, str], Awaitable[Conversation]],
) -> dict[str, Any]:
    """Take over or release: the conversation as it is after."""
    with _answers():
        changed = await action(_key(conversation_id), caller(request))
    return conversation_view(changed, _service(request).clock())


@contextmanager
def _answers() -> Iterator[None]:
    """The service's refusals as HTTP answers: 404, 409, 400."""
    try:
        yield
    except ConversationMissing as error:
        raise NotFoundException(str(error)) from None
    except ConversationRefused as error:
        raise ConflictException(detail=str(error)) from None
    except ValueError as error:
        raise ClientException(str(error)) from None
