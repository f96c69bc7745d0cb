"""pyloto on Redis killed with SIGKILL: what it acknowledged is picked up within 30 seconds
by a live instance (the restarted one, or another), and every reply is sent exactly once.

The killed instance's in-process queue held the records' tasks; its records name it as their
owner, and once its heartbeat is DEAD_AFTER_SECONDS old a live instance adopts them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from pyloto_corp.application.queues import BEAT_INTERVAL_SECONDS, DEAD_AFTER_SECONDS
from tests.e2e.conftest import ServeOnRedis
from tests.e2e.servers import RedisView, ServeProcess, post_webhook
from tests.support.helpers import envelope, text_message
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.slow

BATCHES = 10
PER_BATCH = 10
# The target: work orphaned by a dead instance is picked up within this long.
PICKED_UP_WITHIN = 30.0
# The outbound lane sends 10 a second: 100 replies need ~10 s once adopted.
SENT_WITHIN = PICKED_UP_WITHIN + BATCHES * PER_BATCH / 10 + 20


@pytest.fixture
def view(private_redis: RedisServer, redis_prefix: str) -> Iterator[RedisView]:
    """The test's own reading of the private Redis."""
    client = private_redis.client()
    yield RedisView(client, redis_prefix)
    client.close()


def post_batches(url: str) -> list[str]:
    """Acknowledged message ids of BATCHES webhooks of PER_BATCH messages each."""
    acknowledged: list[str] = []
    with httpx.Client(timeout=10) as client:
        for _ in range(BATCHES):
            messages = [text_message("Quero saber o preço, por favor") for _ in range(PER_BATCH)]
            assert post_webhook(client, url, envelope(messages)).status_code == 200
            acknowledged += [message["id"] for message in messages]
    return acknowledged


def owners(view: RedisView, message_ids: list[str]) -> dict[str, str]:
    """message id → the instance its record names as owner."""
    with view.client.pipeline(transaction=False) as pipe:
        for message_id in message_ids:
            pipe.hget(view.keys.record(message_id), "q")
        found = pipe.execute()
    return {m: q.decode() for m, q in zip(message_ids, found, strict=True) if q is not None}


def wait_adopted(view: RedisView, unfinished: list[str], dead: set[str]) -> float:
    """Seconds until no unfinished record is owned by a dead instance (fails after 60 s)."""
    started = time.monotonic()
    while time.monotonic() - started < 60:
        states = view.states(unfinished)
        still = [m for m, q in owners(view, unfinished).items() if q in dead]
        if not [m for m in still if states[m] != "sent"]:
            return time.monotonic() - started
        time.sleep(0.1)
    pytest.fail("orphaned records were not adopted within 60 s")


def crash(server: ServeProcess, view: RedisView, acknowledged: list[str]) -> list[str]:
    """SIGKILL `server`; the acknowledged records it had not answered yet."""
    server.kill()
    states = view.states(acknowledged)
    assert None not in states.values(), "every acknowledged message is stored"
    unfinished = [m for m, state in states.items() if state != "sent"]
    assert unfinished, "the kill came before the pipeline finished, so recovery is exercised"
    return unfinished


def report(
    name: str, view: RedisView, acknowledged: list[str], adopted_after: float, restart: float
) -> dict[str, int]:
    """Wait for every reply; print the run's figures; the replies by record."""
    states = view.wait_for(acknowledged, seconds=SENT_WITHIN)
    last_sent = time.monotonic() - restart
    replies = view.replies()
    duplicates = sum(count - 1 for count in replies.values() if count > 1)
    print(
        f"\n{name}: {len(acknowledged)} acknowledged, "
        f"{sum(state == 'sent' for state in states.values())} sent, {duplicates} duplicates; "
        f"orphans adopted {adopted_after:.1f} s and last reply sent {last_sent:.1f} s "
        f"after the {'restart' if 'restart' in name else 'kill'} "
        f"(heartbeat every {BEAT_INTERVAL_SECONDS:.0f} s, dead after {DEAD_AFTER_SECONDS:.0f} s)"
    )
    unsent = [m for m, state in states.items() if state != "sent"]
    assert states == dict.fromkeys(acknowledged, "sent"), view.failure_reasons(unsent)
    return {m: replies[m] for m in acknowledged}


def test_the_only_instance_killed_and_restarted_picks_its_work_up_within_30_s(
    serve_on_redis: ServeOnRedis, private_redis: RedisServer, view: RedisView
) -> None:
    server = serve_on_redis(private_redis)
    server.start()
    acknowledged = post_batches(server.url)
    dead = set(owners(view, acknowledged).values())
    unfinished = crash(server, view, acknowledged)

    server.start()
    restart = time.monotonic()
    adopted_after = wait_adopted(view, unfinished, dead)

    assert adopted_after <= PICKED_UP_WITHIN
    sends = report("kill -9 and restart", view, acknowledged, adopted_after, restart)
    assert sends == dict.fromkeys(acknowledged, 1), "each reply was sent exactly once"


def test_a_killed_instance_s_work_is_picked_up_by_another_live_one(
    serve_on_redis: ServeOnRedis, private_redis: RedisServer, view: RedisView
) -> None:
    doomed, survivor = serve_on_redis(private_redis), serve_on_redis(private_redis)
    doomed.launch()
    survivor.launch()
    doomed.wait("/ready")
    survivor.wait("/ready")
    acknowledged = post_batches(doomed.url)  # only the doomed one holds these tasks
    dead = set(owners(view, acknowledged).values())
    unfinished = crash(doomed, view, acknowledged)
    killed = time.monotonic()

    adopted_after = wait_adopted(view, unfinished, dead)

    assert adopted_after <= PICKED_UP_WITHIN
    assert set(owners(view, unfinished).values()) - dead, "the survivor adopted them"
    sends = report("kill -9 of one of two", view, acknowledged, adopted_after, killed)
    assert sends == dict.fromkeys(acknowledged, 1), "each reply was sent exactly once"
