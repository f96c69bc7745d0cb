"""Redis faults under a real `pyloto serve`: an outage mid-burst, a task during an outage, and
Redis unreachable at start-up. The redis-server is the test's own and is really killed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest

from tests.e2e.conftest import ServeOnRedis
from tests.e2e.servers import (
    RedisView,
    ServeProcess,
    make_record,
    post_webhook,
    wait_status,
    write_records,
)
from tests.support.helpers import INTERNAL_TOKEN, envelope, new_wamid, text_message
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.slow

TOKEN = {"X-Internal-Token": INTERNAL_TOKEN}

WEBHOOKS = 300  # single-message webhooks in the burst
CONCURRENCY = 10  # posts in flight at once
OFFERED_PER_SECOND = 50.0  # the burst is paced so that it outlasts the outage
KILL_AFTER_ANSWERS = 60  # Redis is killed once this many webhooks were answered
HELD_FOR_RESTART = 40  # the last posts wait for the restart, so some surely come after it
OUTAGE_SECONDS = 2.0
# Retry budget of the local queues: attempts from the deploy guide, waits doubling from 0.3 s
# capped at 20 s. Inbound, 10 attempts → 9 waits: 0.3+0.6+1.2+2.4+4.8+9.6+19.2+20+20 = 78 s;
# outbound, 8 attempts → 7 waits: 0.3+0.6+1.2+2.4+4.8+9.6+19.2 = 38 s. What they must outlast:
# - the outage, ~2.5 s (2 s plus the restart): a task failing from its first instant is back
#   by its 5th attempt (0.3+0.6+1.2+2.4 = 4.5 s), and retries waiting behind the backlog of
#   the rate-limited lanes burn attempts more slowly still;
# - a send claim the kill caught between its save and the outbox write: it cannot be released
#   while Redis is down, so the send waits SEND_LEASE_SECONDS (30 s) for it → outbound 38 s;
# - a step lease the kill caught (60 s): the process frees its own at the task's next
#   delivery, so it costs one retry, not the lease's length.
# The deploy guide's 5 s → 600 s budgets outlast all of these by far.
FAULT_BACKOFF = {"LOCAL_QUEUE_MIN_BACKOFF_SECONDS": "0.3", "LOCAL_QUEUE_MAX_BACKOFF_SECONDS": "20"}
# The outbound queue drains 10 sends a second: ~250 replies take ~25 s.
SENT_WITHIN_SECONDS = 60.0


@pytest.fixture
def view(private_redis: RedisServer, redis_prefix: str) -> Iterator[RedisView]:
    """The test's own reading of the private Redis."""
    client = private_redis.client()
    yield RedisView(client, redis_prefix)
    client.close()


def _clean_log(server: ServeProcess) -> str:
    """The server's log, checked: no unhandled error (a 500) and no dead-lettered record."""
    log = server.log.read_text()
    assert '"unhandled_error"' not in log, log[-5000:]
    assert '"record_dead_lettered"' not in log, log[-5000:]
    return log


@dataclass(frozen=True)
class Answer:
    message_id: str
    status: int  # HTTP status, or 0 when the request itself failed
    at: float  # time.monotonic() of the answer


class Burst:
    """Posts single-message webhooks CONCURRENCY at a time, paced at OFFERED_PER_SECOND; the
    last HELD_FOR_RESTART wait for `restarted` as well."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.restarted = threading.Event()
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._local = threading.local()
        self._clients: list[httpx.Client] = []

    def _client(self) -> httpx.Client:
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = httpx.Client(timeout=10)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def _post(self, message_id: str, not_before: float, held: bool) -> None:
        time.sleep(max(0.0, not_before - time.monotonic()))
        if held:
            self.restarted.wait(timeout=60)
        payload = envelope([text_message("Oi, vocês abrem amanhã?", message_id=message_id)])
        try:
            status = post_webhook(self._client(), self.url, payload).status_code
        except httpx.HTTPError:
            status = 0
        with self._lock:
            self.answers.append(Answer(message_id, status, time.monotonic()))

    def answered(self) -> int:
        with self._lock:
            return len(self.answers)

    def run(self, message_ids: list[str], pool: ThreadPoolExecutor) -> list[Future[None]]:
        start, held_from = time.monotonic(), len(message_ids) - HELD_FOR_RESTART
        return [
            pool.submit(self._post, message_id, start + n / OFFERED_PER_SECOND, n >= held_from)
            for n, message_id in enumerate(message_ids)
        ]

    def close(self) -> None:
        for client in self._clients:
            client.close()


def _poll_ready(url: str, until: float) -> list[int]:
    """/ready's answers, polled until `until` (time.monotonic())."""
    seen = []
    while time.monotonic() < until:
        seen.append(httpx.get(f"{url}/ready", timeout=5).status_code)
        time.sleep(0.1)
    return seen


def test_redis_killed_during_a_burst_loses_nothing_acknowledged_and_sends_once(
    serve_on_redis: ServeOnRedis, private_redis: RedisServer, view: RedisView
) -> None:
    """Redis is SIGKILLed partway through a burst of 300 webhooks and restarted ~2 s later
    while posts continue: every answer is 200 or 503; every 200's message has a record; a
    message answered 503 has none, unless Redis committed its create in the instant before it
    died and the answer was lost — at most the posts in flight at the kill; such a record stays
    `received` with no task queued (Meta's redelivery finds a duplicate and queues none either:
    the sweeper takes it up after STUCK_AFTER_SECONDS). /ready answers 503 throughout the
    outage and 200 after; without restarting pyloto every acknowledged message reaches `sent`
    with exactly one dry-run send."""
    server = serve_on_redis(private_redis, **FAULT_BACKOFF)
    server.start()
    message_ids = [new_wamid() for _ in range(WEBHOOKS)]
    burst = Burst(server.url)
    try:
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            futures = burst.run(message_ids, pool)
            try:
                deadline = time.monotonic() + 30
                while burst.answered() < KILL_AFTER_ANSWERS and time.monotonic() < deadline:
                    time.sleep(0.01)
                private_redis.stop(kill=True)
                killed_at = time.monotonic()
                ready_during_outage = _poll_ready(server.url, killed_at + OUTAGE_SECONDS)
                private_redis.start()
                restarted_at = time.monotonic()
            finally:
                burst.restarted.set()
            wait_status(server.url, 200)  # back without restarting pyloto
            for future in futures:
                future.result()
    finally:
        burst.close()

    answers = burst.answers
    statuses = {a.status for a in answers}
    assert statuses <= {200, 503}, sorted(statuses)
    acknowledged = sorted({a.message_id for a in answers if a.status == 200})
    only_503 = sorted({a.message_id for a in answers} - set(acknowledged))
    assert len(answers) == WEBHOOKS
    assert ready_during_outage, "/ready was polled during the outage"
    assert set(ready_during_outage) == {503}, ready_during_outage
    assert only_503, "the outage hit some webhooks"
    assert any(a.status == 200 and a.at > restarted_at for a in answers), "posts went on after"

    states = view.states(message_ids)
    assert all(states[m] is not None for m in acknowledged), "a 200 without a record"
    # A webhook carries one message and ingesting it is one Redis script: a 503 means the
    # script's answer never came back. Either it never ran (no record), or Redis ran and
    # fsynced it and died before answering — then the record exists but no task was queued.
    stored_unacknowledged = [m for m in only_503 if states[m] is not None]
    assert len(stored_unacknowledged) <= CONCURRENCY, stored_unacknowledged
    assert {states[m] for m in stored_unacknowledged} <= {"received"}
    assert view.record_ids() == set(acknowledged) | set(stored_unacknowledged)

    final = view.wait_for(acknowledged, "sent", SENT_WITHIN_SECONDS)
    not_sent = {m: s for m, s in final.items() if s != "sent"}
    assert not not_sent, f"{len(not_sent)} acknowledged messages not sent: {not_sent}"
    replies = view.replies()
    assert replies == dict.fromkeys(acknowledged, 1), "exactly one dry-run send per message"
    _clean_log(server)
    print(
        f"redis-fault: webhooks sent={len(answers)} 200s={len(acknowledged)}"
        f" 503s={len(only_503)} records={len(view.record_ids())}"
        f" (stored but 503={len(stored_unacknowledged)}) replies={sum(replies.values())}"
        f" posts before kill≈{sum(a.at <= killed_at for a in answers)}"
    )


def test_a_task_answers_503_while_redis_is_down_and_runs_once_it_is_back(
    serve_on_redis: ServeOnRedis, private_redis: RedisServer, redis_prefix: str, view: RedisView
) -> None:
    """POST /internal/tasks/advance during an outage → 503 with Retry-After (so Cloud Tasks
    retries it), as do /ready and a webhook. After Redis is back the same task → 200 and does
    its step; the record then goes on to `sent` with one reply, and the task redelivered once
    more is a no-op."""
    server = serve_on_redis(private_redis)
    server.start()
    # A record waiting for its first task (fresh: no sweep would pick it up on its own).
    record = make_record("Bom dia, qual o horário?", time.time())
    write_records(private_redis.url, redis_prefix, [record])
    task = {"message_id": record.message_id, "state": "received"}
    with httpx.Client(base_url=server.url, timeout=10) as client:
        private_redis.stop(kill=True)
        answer = client.post("/internal/tasks/advance", json=task, headers=TOKEN)
        assert answer.status_code == 503, answer.text
        assert answer.headers.get("retry-after")
        assert client.get("/ready").status_code == 503
        webhook = post_webhook(client, server.url, envelope([text_message("Oi")]))
        assert webhook.status_code == 503

        private_redis.start()
        wait_status(server.url, 200)
        assert view.states([record.message_id]) == {record.message_id: "received"}
        answer = client.post("/internal/tasks/advance", json=task, headers=TOKEN)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"outcome": "deduped"}
        assert view.wait_for([record.message_id]) == {record.message_id: "sent"}
        again = client.post("/internal/tasks/advance", json=task, headers=TOKEN)
        assert again.json() == {"outcome": "stale"}, "a redelivered task is a no-op"

    assert view.replies() == {record.message_id: 1}
    assert view.record_ids() == {record.message_id}, "the refused webhook stored nothing"
    _clean_log(server)


def test_redis_unreachable_at_start_then_started_without_restarting_pyloto(
    serve_on_redis: ServeOnRedis, private_redis: RedisServer, view: RedisView
) -> None:
    """With nothing listening on REDIS_URL's port, `pyloto serve` still starts: /health 200,
    /ready 503, a webhook 503 and nothing stored. Once a redis-server starts on that port,
    /ready turns 200, webhooks get 200 and their messages reach `sent` — same process."""
    private_redis.stop()  # its port now has nothing listening
    server = serve_on_redis(private_redis)
    server.start(wait_path="/health")
    refused = text_message("Oi, alguém aí?")
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/health").status_code == 200
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["store"] == "unavailable"
        assert post_webhook(client, server.url, envelope([refused])).status_code == 503

        private_redis.start()
        wait_status(server.url, 200)
        assert view.record_ids() == set(), "the refused webhook left nothing behind"
        accepted = [text_message(f"Mensagem {n}") for n in range(5)]
        answer = post_webhook(client, server.url, envelope([refused, *accepted]))
        assert answer.status_code == 200
        assert answer.json()["created"] == 6, "Meta's redelivery of the refused one is new"

    ids = [m["id"] for m in [refused, *accepted]]
    assert set(view.wait_for(ids).values()) == {"sent"}
    assert view.replies() == dict.fromkeys(ids, 1)
    log = _clean_log(server)
    assert "store_unavailable" in log, "the start-up noticed the store was down"
