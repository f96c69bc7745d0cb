"""A Redis killed with SIGKILL under load, in each persistence pyloto may meet, under a real
`pyloto serve`: what it acknowledged (200) before the kill must be there after the restart.
Each test prints its figures: webhooks acknowledged, and of those, how many Redis lost.

By default pyloto accepts only AOF fsynced on every write; the others are refused at start
(tests/e2e/test_serve_on_unpersisted_redis.py) and, met while running, answered 503."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ServeOnRedis
from tests.e2e.servers import RedisView, post_webhook
from tests.support.helpers import envelope, new_wamid, text_message
from tests.support.redis_server import PERSISTENCE, RedisServer
from tests.support.running import running

pytestmark = pytest.mark.slow

WEBHOOKS = 300
CONCURRENCY = 10


@pytest.fixture
def make_redis(tmp_path: Path) -> Iterator[Callable[[str], RedisServer]]:
    """A private redis-server persisting as asked (not started), stopped at the end."""
    made: list[RedisServer] = []

    def create(persistence: str) -> RedisServer:
        made.append(RedisServer(tmp_path / f"redis-{len(made)}", persistence))
        return made[-1]

    yield create
    for server in made:
        server.stop(kill=True)


def burst(url: str, at_answers: dict[int, Callable[[], None]]) -> dict[str, int]:
    """Post WEBHOOKS one-message webhooks, CONCURRENCY at a time; run `at_answers[n]` once n
    of them have been answered. Each message id → its HTTP status (0: no answer)."""
    answers: dict[str, int] = {}
    lock = threading.Lock()
    local = threading.local()
    clients: list[httpx.Client] = []

    def post(message_id: str) -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(timeout=10)
            with lock:
                clients.append(client)
        payload = envelope([text_message("Vocês entregam no sábado?", message_id=message_id)])
        try:
            status = post_webhook(client, url, payload).status_code
        except httpx.HTTPError:
            status = 0
        with lock:
            answers[message_id] = status
            action = at_answers.pop(len(answers), None)
        if action is not None:
            action()

    try:
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            list(pool.map(post, [new_wamid() for _ in range(WEBHOOKS)]))
    finally:
        for client in clients:
            client.close()
    return answers


def lost(server: RedisServer, prefix: str, answers: dict[str, int]) -> tuple[list[str], int]:
    """The acknowledged message ids Redis no longer holds (read after its restart), and how
    many were acknowledged."""
    acknowledged = [m for m, status in answers.items() if status == 200]
    with running(server):
        client = server.client()
        try:
            states = RedisView(client, prefix).states(acknowledged)
        finally:
            client.close()
    return [m for m in acknowledged if states[m] is None], len(acknowledged)


def report(name: str, answers: dict[str, int], gone: list[str], acknowledged: int) -> None:
    refused = sum(status == 503 for status in answers.values())
    print(
        f"\nredis kill -9 under load, {name}: {len(answers)} webhooks, {acknowledged} "
        f"acknowledged, {refused} answered 503, {len(gone)} acknowledged and lost"
    )


@pytest.mark.parametrize(
    ("persistence", "variables"),
    [("aof", {}), ("everysec", {"REDIS_DURABILITY": "everysec"})],
)
def test_a_kill_mid_burst_loses_nothing_acknowledged_on_aof(
    make_redis: Callable[[str], RedisServer],
    serve_on_redis: ServeOnRedis,
    redis_prefix: str,
    persistence: str,
    variables: dict[str, str],
) -> None:
    """AOF fsynced on every write (the default requirement), and fsynced every second when
    accepted (a kill of the Redis process leaves its writes in the page cache; a crash of
    the machine could take up to a second of them, which no test here can cause)."""
    redis_server = make_redis(persistence)
    redis_server.start()
    server = serve_on_redis(redis_server, **variables)
    server.start()
    answers = burst(server.url, {WEBHOOKS // 3: lambda: redis_server.stop(kill=True)})
    server.cleanup()

    gone, acknowledged = lost(redis_server, redis_prefix, answers)
    report(
        f"appendfsync {'always' if persistence == 'aof' else persistence}",
        answers,
        gone,
        acknowledged,
    )
    assert acknowledged >= WEBHOOKS // 3
    assert gone == []


def test_redis_s_default_snapshots_lose_what_they_acknowledged_when_the_loss_is_accepted(
    make_redis: Callable[[str], RedisServer], serve_on_redis: ServeOnRedis, redis_prefix: str
) -> None:
    """Redis's default (RDB snapshots, no AOF), which pyloto refuses unless told to accept the
    loss: what it acknowledged since the last snapshot is gone after a kill. The figure is
    what the refusal prevents."""
    redis_server = make_redis("default")
    redis_server.start()
    server = serve_on_redis(redis_server, REDIS_ALLOW_NO_PERSISTENCE="true")
    server.start()
    answers = burst(server.url, {WEBHOOKS // 3: lambda: redis_server.stop(kill=True)})
    server.cleanup()

    gone, acknowledged = lost(redis_server, redis_prefix, answers)
    report("RDB snapshots only, loss accepted", answers, gone, acknowledged)
    assert gone, "no snapshot was due within the burst: what it acknowledged is lost"


def test_aof_switched_off_mid_burst_then_a_kill_loses_nothing_acknowledged(
    make_redis: Callable[[str], RedisServer], serve_on_redis: ServeOnRedis, redis_prefix: str
) -> None:
    """CONFIG SET appendonly no a third of the way through, SIGKILL at two thirds, restarted
    with AOF: every webhook after the switch was answered 503, so nothing acknowledged is
    missing."""
    redis_server = make_redis("aof")
    redis_server.start()
    server = serve_on_redis(redis_server)
    server.start()

    def switch_off() -> None:
        admin = redis_server.client()
        admin.config_set("appendonly", "no")
        admin.close()

    answers = burst(
        server.url,
        {WEBHOOKS // 3: switch_off, 2 * WEBHOOKS // 3: lambda: redis_server.stop(kill=True)},
    )
    server.cleanup()

    gone, acknowledged = lost(redis_server, redis_prefix, answers)
    report("AOF switched off mid-burst", answers, gone, acknowledged)
    assert acknowledged >= WEBHOOKS // 3 - CONCURRENCY
    assert sum(status == 503 for status in answers.values()) >= WEBHOOKS // 3
    assert gone == []


def test_started_while_redis_is_down_then_up_without_persistence_acknowledges_nothing(
    make_redis: Callable[[str], RedisServer], serve_on_redis: ServeOnRedis, redis_prefix: str
) -> None:
    """pyloto starts with nothing at REDIS_URL; a Redis that persists nothing comes up there;
    a burst, a kill, a restart with AOF: nothing was acknowledged, so nothing is lost, and
    /ready said why all along."""
    redis_server = make_redis("none")
    server = serve_on_redis(redis_server)
    server.start(wait_path="/health")
    redis_server.start()
    answers = burst(server.url, {})
    ready = httpx.get(f"{server.url}/ready", timeout=5)
    server.cleanup()
    redis_server.stop(kill=True)
    redis_server.persistence = PERSISTENCE["aof"]

    gone, acknowledged = lost(redis_server, redis_prefix, answers)
    report("started before a Redis without persistence", answers, gone, acknowledged)
    assert ready.status_code == 503
    assert "neither AOF nor RDB" in ready.json()["not_durable"]
    assert set(answers.values()) == {503}
    assert gone == []
