"""Internal routes for the task queue and operators.

The task routes (marked `TASK_ROUTE`) take X-Internal-Token, or an OIDC bearer token instead
when CLOUD_TASKS_SERVICE_ACCOUNT is set, and never a person's console session; the others
take the token or a console session (see `internal_guard` and http/principal.py).
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.exceptions import ClientException, NotFoundException

from pyloto_corp.application.handoff_notices import NOTIFY_STATE, HandoffNotice, InvalidNotice
from pyloto_corp.application.inspect import record_view
from pyloto_corp.application.queues import STUCK_AFTER_SECONDS
from pyloto_corp.application.replay import Replayer
from pyloto_corp.http.deps import TASK_ROUTE, container_of, internal_guard, path_message_id


class AdvanceTask(msgspec.Struct, forbid_unknown_fields=True):
    """Body of a task: advance `message_id` from `state`."""

    message_id: str
    state: str


_task_decoder = msgspec.json.Decoder(AdvanceTask)


class NotifyTask(msgspec.Struct, forbid_unknown_fields=True):
    """Body of a notice's task: the notice as `HandoffNotice.key` writes it."""

    notice: str


_notify_decoder = msgspec.json.Decoder(NotifyTask)


def _attempt(request: Request[Any, Any, Any]) -> int:
    """This delivery's attempt: Cloud Tasks counts the earlier ones."""
    retries = request.headers.get("x-cloudtasks-taskretrycount", "0")
    # ASCII digits only: a header is Latin-1, and `²` is a digit to isdigit, not to int.
    readable = retries.isascii() and retries.isdigit() and len(retries) < 6
    return int(retries) + 1 if readable else 1


class ReplayRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Body of a replay: one `message_id`, or `failed: true` with an optional `since`.
    `confirm_unknown` (with `message_id`): replay it even though its send's outcome is
    unknown, knowing the reply may already have reached the customer."""

    message_id: str | None = None
    failed: bool = False
    since: float | None = None
    confirm_unknown: bool = False


_replay_decoder = msgspec.json.Decoder(ReplayRequest)


def _replay_request(body: bytes) -> ReplayRequest:
    """The decoded body, or 400: exactly one of `message_id` and `failed: true`."""
    try:
        data = _replay_decoder.decode(body)
    except msgspec.DecodeError as error:
        raise ClientException(f"invalid replay body: {error}") from None
    if data.failed == bool(data.message_id):
        raise ClientException('give either {"message_id": ...} or {"failed": true}')
    if data.since is not None and not data.failed:
        raise ClientException('"since" goes with "failed": true')
    if data.confirm_unknown and data.failed:
        raise ClientException('"confirm_unknown" goes with one "message_id", not "failed"')
    return data


class InternalController(Controller):
    """Task callbacks, record inspection and replay."""

    path = "/internal"
    guards = [internal_guard]  # noqa: RUF012

    @post("/tasks/advance", status_code=200, opt=TASK_ROUTE)
    async def advance(self, request: Request[Any, Any, Any]) -> dict[str, str]:
        """Run one transition; a task whose record moved on is a no-op success."""
        try:
            data = _task_decoder.decode(await request.body())
        except msgspec.DecodeError as error:
            raise ClientException(f"invalid task body: {error}") from None
        container = container_of(request)
        attempt = _attempt(request)
        max_attempts = container.max_attempts(data.state)
        spec = container.chart.states.get(data.state)
        seen = container.retries_seen  # a failure (5xx) leaves the retry noted
        seen.saw(spec.queue if spec else "inbound", data.message_id, data.state, attempt)
        outcome = await container.advancer.deliver(
            data.message_id,
            data.state,
            attempt,
            max_attempts,
            traceparent=request.headers.get("traceparent"),
        )
        seen.finished(data.message_id, data.state)
        return {"outcome": outcome}

    @post("/tasks/notify", status_code=200, opt=TASK_ROUTE)
    async def notify(self, request: Request[Any, Any, Any]) -> dict[str, str]:
        """Deliver one handoff notice; 503 (the queue retries) while its webhook fails."""
        try:
            notice = HandoffNotice.from_key(_notify_decoder.decode(await request.body()).notice)
        except (msgspec.DecodeError, InvalidNotice) as error:
            raise ClientException(f"invalid notify task: {error}") from None
        container, attempt = container_of(request), _attempt(request)
        container.retries_seen.saw("outbound", notice.key, NOTIFY_STATE, attempt)
        outcome = await container.notifier.deliver(notice, attempt)
        container.retries_seen.finished(notice.key, NOTIFY_STATE)
        return {"outcome": outcome}

    @post("/sweep", status_code=200, opt=TASK_ROUTE)
    async def sweep(self, request: Request[Any, Any, Any]) -> dict[str, int]:
        """Re-queue stuck records and purge expired ones (for Cloud Scheduler)."""
        result = await container_of(request).sweeper.sweep(STUCK_AFTER_SECONDS)
        return {"requeued": result.requeued, "purged": result.purged, "released": result.released}

    @post("/replay", status_code=200)
    async def replay(self, request: Request[Any, Any, Any]) -> dict[str, Any]:
        """Re-drive dead-lettered records through the outbound step; what was done."""
        data = _replay_request(await request.body())
        replayer = Replayer(container_of(request).advancer, container_of(request).store)
        if data.message_id:
            summary = await replayer.replay(data.message_id, confirm_unknown=data.confirm_unknown)
        else:
            summary = await replayer.replay_failed(data.since)
        return summary.as_dict()

    @get("/messages/{message_id:path}")
    async def inspect(self, request: Request[Any, Any, Any]) -> dict[str, Any]:
        """The record with personal data masked; the id percent-encoded (`/` as `%2F`)."""
        message_id = path_message_id(request, "/internal/messages/")
        record = await container_of(request).store.get(message_id)
        if record is None:
            raise NotFoundException("no record with this message id")
        return record_view(record)
