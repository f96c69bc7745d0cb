"""Several `pyloto serve` processes on one Redis, and the sweep Cloud Scheduler calls."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ServeOnRedis
from tests.e2e.servers import RedisView, make_record, post_webhook, write_records
from tests.support.helpers import INTERNAL_TOKEN, envelope, text_message
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.slow

TOKEN = {"X-Internal-Token": INTERNAL_TOKEN}
ENTRIES = 3
PER_ENTRY = 10
POSTS_PER_SERVER = 4  # the same batch, to each of the two servers, all at once


@pytest.fixture
def view(redis_server: RedisServer, redis_prefix: str) -> Iterator[RedisView]:
    """The test's own reading of the session's Redis (under the test's prefix)."""
    client = redis_server.client()
    yield RedisView(client, redis_prefix)
    client.close()


def _batch() -> dict[str, Any]:
    """One webhook of ENTRIES entries with PER_ENTRY text messages each."""
    entries = [
        envelope([text_message(f"Pedido {e}-{n}") for n in range(PER_ENTRY)])["entry"][0]
        for e in range(ENTRIES)
    ]
    return {"object": "whatsapp_business_account", "entry": entries}


def _ids(payload: dict[str, Any]) -> list[str]:
    return [
        message["id"]
        for entry in payload["entry"]
        for change in entry["changes"]
        for message in change["value"]["messages"]
    ]


def test_two_servers_on_one_redis_store_and_answer_each_message_once(
    serve_on_redis: ServeOnRedis, redis_server: RedisServer, view: RedisView
) -> None:
    """Two `pyloto serve` on different ports share one Redis and prefix. The same batch of
    3 entries x 10 messages, posted 4 times to each at once (Meta's redeliveries landing on
    different instances): every post 200, the stores' creates across all posts sum to one per
    message, and each message ends with exactly one record, `sent`, and one dry-run reply."""
    servers = [serve_on_redis(redis_server), serve_on_redis(redis_server)]
    for server in servers:
        server.launch()
    for server in servers:
        server.wait()
    payload = _batch()
    ids = _ids(payload)
    targets = [server.url for server in servers] * POSTS_PER_SERVER

    def post(url: str) -> httpx.Response:
        with httpx.Client(timeout=10) as client:
            return post_webhook(client, url, payload)

    with ThreadPoolExecutor(len(targets)) as pool:
        answers = list(pool.map(post, targets))

    assert [a.status_code for a in answers] == [200] * len(targets), [a.text for a in answers]
    assert sum(a.json()["created"] for a in answers) == len(ids), "one winner per message"
    assert sum(a.json()["duplicates"] for a in answers) == len(ids) * (len(targets) - 1)
    assert view.record_ids() == set(ids), "exactly one record per message"
    assert set(view.wait_for(ids).values()) == {"sent"}
    assert view.replies() == dict.fromkeys(ids, 1), "exactly one reply per message"
    for server in servers:  # both instances see the same state
        seen = httpx.get(f"{server.url}/internal/messages/{ids[0]}", headers=TOKEN, timeout=5)
        assert seen.status_code == 200
        assert seen.json()["state"] == "sent"


def test_sweep_needs_the_token_and_requeues_stuck_records(
    serve_on_redis: ServeOnRedis, redis_server: RedisServer, redis_prefix: str, view: RedisView
) -> None:
    """POST /internal/sweep: 401 without a token, 403 with a wrong one, 200 with
    {"requeued", "purged", "released"}. Records left mid-way with an old updated_at and no
    task queued (as a crashed instance leaves them) are re-queued by the sweep and reach
    `sent`; a record past retention is purged."""
    server = serve_on_redis(redis_server)
    server.start()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.post("/internal/sweep").status_code == 401
        wrong = client.post("/internal/sweep", headers={"X-Internal-Token": "nope"})
        assert wrong.status_code == 403
        first = client.post("/internal/sweep", headers=TOKEN)
        assert first.status_code == 200
        assert first.json() == {"requeued": 0, "purged": 0, "released": 0}

        an_hour_ago = time.time() - 3600  # stuck: untouched for longer than the sweep's limit
        stuck = [
            make_record("Oi, ainda estão abertos?", an_hour_ago),
            make_record("Quanto custa?", an_hour_ago, "fallback", fallback_reason="llm_disabled"),
        ]
        expired = make_record("Mensagem antiga", time.time() - 9 * 86400, "ignored")
        write_records(redis_server.url, redis_prefix, [*stuck, expired])
        stuck_ids = [record.message_id for record in stuck]
        assert view.states(stuck_ids) == dict.fromkeys(stuck_ids, "received") | {
            stuck_ids[1]: "fallback"
        }

        swept = client.post("/internal/sweep", headers=TOKEN)
        assert swept.status_code == 200
        assert swept.json() == {"requeued": 2, "purged": 1, "released": 0}

    assert view.wait_for(stuck_ids) == dict.fromkeys(stuck_ids, "sent")
    assert view.replies() == dict.fromkeys(stuck_ids, 1)
    assert view.states([expired.message_id]) == {expired.message_id: None}
