"""The production engine end to end: `pyloto serve` on Redis with Cloud Tasks (the emulator).

Webhooks become tasks in the emulator, which calls the service back over HTTP for each
transition. The emulator retries failed tasks at once and forever (it has no backoff or
attempt limit), which is what the fault tests lean on.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest
import redis

from pyloto_corp.adapters.cloud_tasks import create_client, ensure_queues
from pyloto_corp.application.handoff_notices import HandoffNotice, signature
from pyloto_corp.application.queues import INBOUND, OUTBOUND
from pyloto_corp.bootstrap import cloud_tasks_queue, handoff_notifier
from pyloto_corp.config import load_settings
from pyloto_corp.devtools.local_http import LocalServer
from tests.e2e.servers import (
    RedisView,
    ServeProcess,
    make_record,
    post_webhook,
    process_env,
    redis_variables,
    write_records,
)
from tests.support.helpers import envelope, text_message
from tests.support.notice_receiver import NoticeReceiver
from tests.support.redis_server import RedisServer, free_port
from tests.support.tasks_emulator import TasksEmulator

pytestmark = pytest.mark.slow

PROJECT, LOCATION = "pyloto-e2e", "southamerica-east1"


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[TasksEmulator]:
    """A fresh emulator with both queues created by the project's own `ensure_queues`."""
    running = TasksEmulator(free_port(), tmp_path / "emulator.log")
    running.start()

    async def ensure() -> None:
        client = create_client(running.host)
        parent = client.common_location_path(PROJECT, LOCATION)
        wanted = {
            client.queue_path(PROJECT, LOCATION, "whatsapp-inbound"): INBOUND,
            client.queue_path(PROJECT, LOCATION, "whatsapp-outbound"): OUTBOUND,
        }
        await ensure_queues(client, parent, wanted, dry_run=False)
        await client.transport.close()  # type: ignore[no-untyped-call]

    asyncio.run(ensure())
    yield running
    running.stop()


class FlakyProxy:
    """Sits between the emulator and the service: fails the first `failures` deliveries of
    each task with 500, then forwards (headers included, so retry counts reach the app)."""

    def __init__(self, target: str, failures: int) -> None:
        self.target = target
        self.failures = failures
        self.seen: dict[bytes, int] = {}
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with proxy.lock:
                    proxy.seen[body] = proxy.seen.get(body, 0) + 1
                    fail = proxy.seen[body] <= proxy.failures
                if fail:
                    self.send_response(500)
                    self.end_headers()
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                answer = httpx.post(proxy.target + self.path, content=body, headers=headers)
                self.send_response(answer.status_code)
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, *args: object) -> None:
                pass

        self.server = LocalServer(Handler)

    @property
    def url(self) -> str:
        """Base URL the tasks should call."""
        return self.server.url

    def stop(self) -> None:
        """Stop serving."""
        self.server.stop()


def _serve(
    tmp_path: Path, redis_server: RedisServer, prefix: str, emulator: TasksEmulator, port: int,
    base_url: str | None = None, **extra: str,
) -> ServeProcess:  # fmt: skip
    variables = redis_variables(
        redis_server.url,
        prefix,
        tmp_path,
        QUEUE_BACKEND="cloud_tasks",
        GCP_PROJECT=PROJECT,
        GCP_LOCATION=LOCATION,
        CLOUD_TASKS_EMULATOR_HOST=emulator.host,
        INTERNAL_TASK_BASE_URL=base_url or f"http://127.0.0.1:{port}",
        **extra,
    )
    server = ServeProcess(process_env(variables), tmp_path / "serve.log")
    server.port, server.url = port, f"http://127.0.0.1:{port}"
    return server


def _post_batch(url: str, count: int) -> list[str]:
    messages = [text_message(f"Quero saber o preço {n}") for n in range(count)]
    with httpx.Client(timeout=10) as client:
        response = post_webhook(client, url, envelope(messages))
    assert response.status_code == 200, response.text
    return [message["id"] for message in messages]


def test_webhook_to_sent_through_cloud_tasks_callbacks(
    tmp_path: Path, redis_server: RedisServer, redis_prefix: str, emulator: TasksEmulator
) -> None:
    """Each transition is a task the emulator delivers over HTTP; every message ends `sent`
    with exactly one reply, and no transition ran in the web process's own queue."""
    port = free_port()
    server = _serve(tmp_path, redis_server, redis_prefix, emulator, port)
    try:
        server.start()
        ids = _post_batch(server.url, 5)
        view = RedisView(redis.Redis(port=redis_server.port), redis_prefix)
        assert view.wait_for(ids, "sent", seconds=60) == dict.fromkeys(ids, "sent")
        assert view.replies() == dict.fromkeys(ids, 1)
    finally:
        server.stop()


def test_a_burst_through_cloud_tasks_is_answered_once_by_its_newest_message(
    tmp_path: Path, redis_server: RedisServer, redis_prefix: str, emulator: TasksEmulator
) -> None:
    """Three messages of one customer, 0.4 s apart, each its own webhook: each waits out
    the quiet window in a task scheduled for its end (named for it), and only the newest is
    answered; the others end `merged`."""
    port = free_port()
    server = _serve(tmp_path, redis_server, redis_prefix, emulator, port, BURST_QUIET_SECONDS="1.5")
    try:
        server.start()
        ids = []
        with httpx.Client(timeout=10) as client:
            for text in ("oi", "quero saber o preço", "do corte masculino"):
                message = text_message(text)
                response = post_webhook(client, server.url, envelope([message]))
                assert response.status_code == 200, response.text
                ids.append(str(message["id"]))
                time.sleep(0.4)
        view = RedisView(redis.Redis(port=redis_server.port), redis_prefix)
        assert view.wait_for(ids[-1:], "sent", seconds=60) == {ids[-1]: "sent"}
        assert view.wait_for(ids[:-1], "merged", seconds=10) == dict.fromkeys(ids[:-1], "merged")
        assert view.replies() == {ids[-1]: 1}
    finally:
        server.stop()


def test_a_task_failing_twice_is_retried_and_then_succeeds(
    tmp_path: Path, redis_server: RedisServer, redis_prefix: str, emulator: TasksEmulator
) -> None:
    """The first two deliveries of every task fail; the queue retries, the third delivery
    runs the step (recorded as attempt 3) and every message still gets one reply."""
    port = free_port()
    proxy = FlakyProxy(f"http://127.0.0.1:{port}", failures=2)
    server = _serve(tmp_path, redis_server, redis_prefix, emulator, port, base_url=proxy.url)
    try:
        server.start()
        ids = _post_batch(server.url, 3)
        view = RedisView(redis.Redis(port=redis_server.port), redis_prefix)
        assert view.wait_for(ids, "sent", seconds=60) == dict.fromkeys(ids, "sent")
        assert view.replies() == dict.fromkeys(ids, 1)
        with httpx.Client(timeout=5) as client:
            history = client.get(
                f"{server.url}/internal/messages/{ids[0]}",
                headers={"X-Internal-Token": server.env["INTERNAL_TASK_TOKEN"]},
            ).json()["history"]
        assert {step["attempt"] for step in history} == {3}
        assert all(count == 3 for count in proxy.seen.values()), proxy.seen
    finally:
        server.stop()
        proxy.stop()


def test_killed_while_tasks_are_in_flight_every_message_is_sent_once(
    tmp_path: Path, redis_server: RedisServer, redis_prefix: str, emulator: TasksEmulator
) -> None:
    """SIGKILL with tasks queued and running; the emulator keeps retrying; after a restart
    on the same port every acknowledged message reaches `sent` exactly once."""
    port = free_port()
    server = _serve(tmp_path, redis_server, redis_prefix, emulator, port)
    view = RedisView(redis.Redis(port=redis_server.port), redis_prefix)
    try:
        server.start()
        ids = _post_batch(server.url, 10) + _post_batch(server.url, 10)
        server.kill()
        unfinished = [m for m, state in view.states(ids).items() if state != "sent"]
        assert unfinished, "the kill came before the pipeline finished"
        server.start()
        assert view.wait_for(ids, "sent", seconds=90) == dict.fromkeys(ids, "sent")
        assert view.replies() == dict.fromkeys(ids, 1)
    finally:
        server.stop()


def test_last_attempt_dead_letters_instead_of_losing_the_task(
    tmp_path: Path, redis_server: RedisServer, redis_prefix: str, emulator: TasksEmulator
) -> None:
    """A step that fails every time (here a record broken by hand: queued for sending with
    no reply) is answered 503 until the queue's last attempt (8 on whatsapp-outbound), which
    moves the record to `failed` with the reason and answers 200, so the dead letter is
    kept rather than dropped by the queue."""
    port = free_port()
    server = _serve(tmp_path, redis_server, redis_prefix, emulator, port)
    view = RedisView(redis.Redis(port=redis_server.port), redis_prefix)
    broken = make_record("Olá", at=time.time() - 3600, state="queued_outbound", reply=None)
    write_records(redis_server.url, redis_prefix, [broken])
    try:
        server.start()
        token = {"X-Internal-Token": server.env["INTERNAL_TASK_TOKEN"]}
        with httpx.Client(timeout=10) as http:
            swept = http.post(f"{server.url}/internal/sweep", headers=token).json()
        assert swept["requeued"] == 1
        message_id = broken.message_id
        assert view.wait_for([message_id], "failed", seconds=60) == {message_id: "failed"}
        with httpx.Client(timeout=5) as http:
            record = http.get(f"{server.url}/internal/messages/{message_id}", headers=token).json()
        assert record["failure_reason"].startswith("out of attempts (8)")
        assert record["history"][-1]["attempt"] == 8
        assert view.replies() == {}, "nothing was sent"
    finally:
        server.stop()


def test_a_handoff_notice_goes_through_cloud_tasks_and_is_retried_until_accepted(
    tmp_path: Path, redis_server: RedisServer, redis_prefix: str, emulator: TasksEmulator
) -> None:
    """A notice queued on Cloud Tasks is delivered by the service's notify route: the
    webhook's two 503s make the route answer 503, the emulator retries, the third is
    accepted, signed, and the task is done (nothing more arrives)."""
    receiver = NoticeReceiver([503, 503])
    port = free_port()
    server = _serve(
        tmp_path, redis_server, redis_prefix, emulator, port,
        HANDOFF_WEBHOOK_URL=receiver.url, HANDOFF_WEBHOOK_SECRET="e2e-handoff-secret",
    )  # fmt: skip
    notice = HandoffNotice("c0ffee" * 5 + "00", "waiting_human", "bot", "llm_handoff", 1765.5, 1)

    async def enqueue() -> None:
        # What an instance with the same settings does when a conversation changes mode.
        settings = load_settings(server.env)
        queue = cloud_tasks_queue(settings)
        notifier = handoff_notifier(settings, queue)
        try:
            await notifier.notify(notice)
        finally:
            await notifier.close()
            await queue.close()

    try:
        server.start()
        asyncio.run(enqueue())
        deadline = time.monotonic() + 60
        while len(receiver.received) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # room for a fourth delivery, which must not come
    finally:
        server.stop()
        receiver.stop()
    assert [item.answered for item in receiver.received] == [503, 503, 200]
    for item in receiver.received:
        expected = signature(item.body, "e2e-handoff-secret")
        assert item.headers["x-pyloto-signature-256"] == expected
        assert json.loads(item.body)["id"] == notice.id
