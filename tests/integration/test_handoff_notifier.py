"""Handoff notices through the real in-process queue to a local webhook server: signed,
retried on 5xx, 408, 429 and timeouts, given up after the queue's attempts, never retried on
another 4xx, and never sent without HANDOFF_WEBHOOK_URL."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from pyloto_corp.adapters.cloud_tasks import CallbackTarget, CloudTasksQueue
from pyloto_corp.adapters.local_queue import LocalQueue
from pyloto_corp.application.handoff_notices import NOTICE_TYPE, NOTIFY_STATE, HandoffNotice
from pyloto_corp.application.ports import Task
from pyloto_corp.application.queues import OUTBOUND
from pyloto_corp.bootstrap import Container, bootstrap
from pyloto_corp.config import Settings
from pyloto_corp.http.app import create_app
from pyloto_corp.observability.setup import TelemetryRuntime
from tests.support.helpers import INTERNAL_TOKEN, SENDER, eventually
from tests.support.notice_receiver import NoticeReceiver
from tests.support.telemetry_capture import Captured

pytestmark = pytest.mark.anyio

SECRET = "handoff-test-secret"
CONVERSATION = hashlib.sha256(b"a conversation").hexdigest()[:32]
NOTICE = HandoffNotice(CONVERSATION, "waiting_human", "bot", "keyword", 1765100000.25, 3)


@pytest.fixture
def receiver() -> Iterator[NoticeReceiver]:
    """A webhook server of this test's own (answering 200 unless the test scripts it)."""
    server = NoticeReceiver()
    yield server
    server.stop()


@asynccontextmanager
async def started(
    settings: Settings, telemetry: TelemetryRuntime | None = None
) -> AsyncIterator[Container]:
    container = bootstrap(settings, telemetry=telemetry)
    await container.start()
    try:
        yield container
    finally:
        await container.stop()


def notifying(make_settings: Callable[..., Settings], receiver: NoticeReceiver) -> Settings:
    return make_settings(HANDOFF_WEBHOOK_URL=receiver.url, HANDOFF_WEBHOOK_SECRET=SECRET)


async def idle(container: Container) -> None:
    queue = container.queue
    assert isinstance(queue, LocalQueue)
    await eventually(queue.idle)


def verified(body: bytes, header: str) -> bool:
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(header, expected)


async def test_a_notice_failing_twice_with_503_arrives_once_accepted_signed_and_clean(
    make_settings: Callable[..., Settings], receiver: NoticeReceiver
) -> None:
    """Two 503s are retried by the queue; the third delivery is accepted and nothing follows.
    Every delivery is the same signed body (same id), the documented payload and nothing
    personal."""
    receiver.script = [503, 503]
    async with started(notifying(make_settings, receiver)) as container:
        await container.notifier.notify(NOTICE)
        await eventually(lambda: len(receiver.received) >= 3)
        await idle(container)
    assert [item.answered for item in receiver.received] == [503, 503, 200]
    bodies = receiver.bodies()
    assert len(set(bodies)) == 1, "every delivery carries the same notice"
    for item in receiver.received:
        assert item.path == "/hooks/pyloto"
        assert item.headers["content-type"] == "application/json"
        assert verified(item.body, item.headers["x-pyloto-signature-256"])
    payload = json.loads(bodies[0])
    assert payload == {
        "type": NOTICE_TYPE,
        "id": NOTICE.id,
        "conversation": CONVERSATION,
        "mode": "waiting_human",
        "previous_mode": "bot",
        "reason": "keyword",
        "at": 1765100000.25,
        "version": 3,
    }
    assert SENDER not in bodies[0].decode()


@pytest.mark.parametrize("status", [408, 429, 500, 502])
async def test_statuses_a_retry_may_fix_are_retried(
    make_settings: Callable[..., Settings], receiver: NoticeReceiver, status: int
) -> None:
    """408, 429 and 5xx go back to the queue until the webhook accepts."""
    receiver.script = [status]
    async with started(notifying(make_settings, receiver)) as container:
        await container.notifier.notify(NOTICE)
        await eventually(lambda: len(receiver.received) >= 2)
        await idle(container)
    assert [item.answered for item in receiver.received] == [status, 200]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410])
async def test_a_final_4xx_is_not_retried(
    make_settings: Callable[..., Settings],
    receiver: NoticeReceiver,
    status: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 4xx other than 408 and 429 is one delivery, logged as rejected."""
    receiver.script = [status]
    caplog.set_level(logging.INFO, "pyloto_corp.application.handoff_notices")
    async with started(notifying(make_settings, receiver)) as container:
        await container.notifier.notify(NOTICE)
        await eventually(lambda: len(receiver.received) >= 1)
        await idle(container)
    assert [item.answered for item in receiver.received] == [status]
    [line] = [r for r in caplog.records if r.getMessage() == "handoff_notice_rejected"]
    assert getattr(line, "http_status", None) == status


async def test_a_webhook_that_never_accepts_is_given_up_after_the_queues_attempts(
    make_settings: Callable[..., Settings],
    receiver: NoticeReceiver,
    caplog: pytest.LogCaptureFixture,
    captured: Captured,
) -> None:
    """Always 503: the outbound queue's attempts, then one `handoff_notice_gave_up` line
    and no more deliveries; the metric counts the retries and the give-up."""
    receiver.then = 503
    caplog.set_level(logging.INFO, "pyloto_corp")
    settings = notifying(make_settings, receiver)
    async with started(settings, captured.runtime) as container:
        await container.notifier.notify(NOTICE)
        await eventually(lambda: len(receiver.received) >= OUTBOUND.max_attempts)
        await idle(container)
    assert len(receiver.received) == OUTBOUND.max_attempts
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("handoff_notice_gave_up") == 1
    assert messages.count("handoff_notice_retry") == OUTBOUND.max_attempts - 1
    assert "task_dropped" not in messages
    assert captured.points("pyloto.handoff.notices") == {
        (("pyloto.outcome", "retried"),): OUTBOUND.max_attempts - 1,
        (("pyloto.outcome", "gave_up"),): 1,
    }


async def test_a_timeout_is_retried(
    make_settings: Callable[..., Settings],
) -> None:
    """A webhook slower than HANDOFF_WEBHOOK_TIMEOUT_SECONDS counts as a failure: sent again."""
    slow = NoticeReceiver([0], stall_seconds=1.0)
    try:
        settings = make_settings(
            HANDOFF_WEBHOOK_URL=slow.url,
            HANDOFF_WEBHOOK_SECRET=SECRET,
            HANDOFF_WEBHOOK_TIMEOUT_SECONDS="0.2",
        )
        async with started(settings) as container:
            await container.notifier.notify(NOTICE)
            await eventually(lambda: len(slow.received) >= 2)
            await idle(container)
    finally:
        slow.stop()
    assert len(slow.bodies()) == 2


async def test_without_a_url_nothing_is_queued_or_sent(
    make_settings: Callable[..., Settings], receiver: NoticeReceiver
) -> None:
    """HANDOFF_WEBHOOK_URL unset: `notify` queues nothing, so nothing reaches any server."""
    async with started(make_settings()) as container:
        assert not container.notifier.enabled
        await container.notifier.notify(NOTICE)
        queue = container.queue
        assert isinstance(queue, LocalQueue)
        assert queue.idle()
    assert receiver.received == []


async def test_the_same_notice_queued_twice_while_pending_is_delivered_once(
    make_settings: Callable[..., Settings], receiver: NoticeReceiver
) -> None:
    """A repeated `notify` of a notice whose delivery is still retrying is the same task."""
    receiver.script = [503]
    async with started(notifying(make_settings, receiver)) as container:
        await container.notifier.notify(NOTICE)
        await container.notifier.notify(NOTICE)
        await eventually(lambda: len(receiver.received) >= 2)
        await idle(container)
    assert [item.answered for item in receiver.received] == [503, 200]


# --- The Cloud Tasks route ------------------------------------------------------------------


@asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=create_app(bootstrap(settings))) as client:
        yield client


def notify_task(key: str, retries: int | None = None) -> dict[str, Any]:
    headers = {"X-Internal-Token": INTERNAL_TOKEN}
    if retries is not None:
        headers["X-CloudTasks-TaskRetryCount"] = str(retries)
    return {"content": json.dumps({"notice": key}).encode(), "headers": headers}


async def test_the_notify_route_delivers_and_answers_503_while_the_webhook_fails(
    make_settings: Callable[..., Settings], receiver: NoticeReceiver
) -> None:
    """Cloud Tasks' delivery: 503 (so Cloud Tasks retries) while the webhook answers 503,
    `sent` once it accepts; the last attempt (by Cloud Tasks' retry count) gives up with 200."""
    receiver.script = [503, 503]
    async with app_client(notifying(make_settings, receiver)) as client:
        failed = await client.post("/internal/tasks/notify", **notify_task(NOTICE.key))
        assert failed.status_code == 503
        last = await client.post(
            "/internal/tasks/notify", **notify_task(NOTICE.key, OUTBOUND.max_attempts - 1)
        )
        assert last.status_code == 200
        assert last.json() == {"outcome": "gave_up"}
        sent = await client.post("/internal/tasks/notify", **notify_task(NOTICE.key, 2))
        assert sent.status_code == 200
        assert sent.json() == {"outcome": "sent"}
    assert [item.answered for item in receiver.received] == [503, 503, 200]
    assert all(verified(i.body, i.headers["x-pyloto-signature-256"]) for i in receiver.received)


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"[]", b'{"notice": 1}', b'{"notice": "x", "more": 1}', b'{"notice": "handoff:x"}'],
)
async def test_the_notify_route_refuses_a_body_it_did_not_write_with_400(
    make_settings: Callable[..., Settings], receiver: NoticeReceiver, body: bytes
) -> None:
    async with app_client(notifying(make_settings, receiver)) as client:
        response = await client.post(
            "/internal/tasks/notify", content=body, headers={"X-Internal-Token": INTERNAL_TOKEN}
        )
    assert response.status_code == 400
    assert receiver.received == []


@pytest.mark.parametrize(("token", "status"), [(None, 401), ("wrong", 403)])
async def test_the_notify_route_needs_the_internal_token(
    make_settings: Callable[..., Settings],
    receiver: NoticeReceiver,
    token: str | None,
    status: int,
) -> None:
    headers = {} if token is None else {"X-Internal-Token": token}
    async with app_client(notifying(make_settings, receiver)) as client:
        response = await client.post(
            "/internal/tasks/notify",
            content=json.dumps({"notice": NOTICE.key}).encode(),
            headers=headers,
        )
    assert response.status_code == status
    assert receiver.received == []


def test_cloud_tasks_sends_a_notice_to_the_notify_route_and_a_step_to_advance() -> None:
    """The adapter picks each task's route; a notice's body is the notice, nothing else."""
    target = CallbackTarget(base_url="https://pyloto.example.run.app/", internal_token="t")
    names = {"inbound": "whatsapp-inbound", "outbound": "whatsapp-outbound"}
    queue = CloudTasksQueue(lambda: pytest.fail("no client is needed"), "p", "l", names, target)
    notice_task = queue.build(Task(NOTICE.key, NOTIFY_STATE, "outbound"))
    step_task = queue.build(Task("wamid.A", "deduped", "inbound"))
    assert notice_task.http_request.url == "https://pyloto.example.run.app/internal/tasks/notify"
    assert json.loads(notice_task.http_request.body) == {"notice": NOTICE.key}
    assert "/queues/whatsapp-outbound/" in notice_task.name
    assert step_task.http_request.url == "https://pyloto.example.run.app/internal/tasks/advance"
    assert json.loads(step_task.http_request.body) == {"message_id": "wamid.A", "state": "deduped"}
