"""What pyloto knows of Redis's durability: the persistence mode (refused at start when there
is none, shown by /ready), and a Redis that lost writes while pyloto ran (an ERROR and a
count). Every Redis here is a real redis-server of the test's own, killed for real."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from pyloto_corp.adapters.redis_keys import RedisKeys
from pyloto_corp.adapters.redis_store import RedisStore, connect
from pyloto_corp.application.queues import DEAD_AFTER_SECONDS
from pyloto_corp.application.sweeper import Sweeper
from pyloto_corp.bootstrap import bootstrap, load_chart, persistence_refusal
from pyloto_corp.config import Settings
from pyloto_corp.http.app import create_app
from tests.integration.conftest import RETENTION_SECONDS, terminal_states
from tests.support.redis_server import RedisServer, free_port
from tests.support.telemetry_capture import Captured
from tests.unit.fakes import FakeQueue

pytestmark = pytest.mark.anyio

MakeRedis = Callable[[str], RedisServer]


@pytest.fixture
def make_redis(tmp_path: Path) -> Iterator[MakeRedis]:
    """Start private redis-servers persisting as asked; all stopped at the end."""
    started: list[RedisServer] = []

    def create(persistence: str) -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{len(started)}", persistence)
        server.start()
        started.append(server)
        return server

    yield create
    for server in started:
        server.stop(kill=True)


def redis_settings(make_settings: Callable[..., Settings], url: str, **extra: str) -> Settings:
    return make_settings(STATE_BACKEND="redis", REDIS_URL=url, REDIS_TIMEOUT_SECONDS="0.5", **extra)


@pytest.mark.parametrize(
    ("persistence", "mode"), [("aof", "aof"), ("rdb", "rdb"), ("none", "none")]
)
async def test_ready_shows_how_redis_persists(
    make_redis: MakeRedis,
    make_settings: Callable[..., Settings],
    persistence: str,
    mode: str,
) -> None:
    server = make_redis(persistence)
    settings = redis_settings(make_settings, server.url, REDIS_ALLOW_NO_PERSISTENCE="true")
    async with AsyncTestClient(app=create_app(bootstrap(settings))) as client:
        response = await client.get("/ready")
    assert response.status_code == 200
    assert response.json()["durability"] == mode


async def test_ready_on_sqlite_names_it(make_settings: Callable[..., Settings]) -> None:
    async with AsyncTestClient(app=create_app(bootstrap(make_settings()))) as client:
        assert (await client.get("/ready")).json()["durability"] == "sqlite"


async def test_a_redis_without_persistence_is_refused_unless_accepted(
    make_redis: MakeRedis, make_settings: Callable[..., Settings]
) -> None:
    bare, kept = make_redis("none"), make_redis("rdb")

    refusal = await persistence_refusal(redis_settings(make_settings, bare.url))
    assert refusal is not None
    assert "neither AOF nor RDB" in refusal
    assert "REDIS_ALLOW_NO_PERSISTENCE=true" in refusal
    accepted = redis_settings(make_settings, bare.url, REDIS_ALLOW_NO_PERSISTENCE="true")
    assert await persistence_refusal(accepted) is None
    assert await persistence_refusal(redis_settings(make_settings, kept.url)) is None
    # Unreachable: not refused here (the service starts and answers 503 until it can).
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    assert await persistence_refusal(redis_settings(make_settings, nowhere)) is None


Watched = tuple[Sweeper, RedisStore, Captured]


@pytest.fixture
async def watch(redis_prefix: str) -> AsyncIterator[Callable[[RedisServer], Watched]]:
    """A sweeper beating on a given Redis, its telemetry captured (all closed at the end)."""
    opened: list[Watched] = []

    def create(server: RedisServer) -> Watched:
        keys = RedisKeys(redis_prefix)
        store = RedisStore(connect(server.url, 0.5), terminal_states(), RETENTION_SECONDS, keys)
        capture = Captured("durability-test-key")
        telemetry = capture.runtime.telemetry
        sweeper = Sweeper(
            store, FakeQueue(), load_chart(), time.time, RETENTION_SECONDS, None, telemetry
        )
        opened.append((sweeper, store, capture))
        return opened[-1]

    yield create
    for _, store, capture in opened:
        await store.close()
        capture.runtime.shutdown()


async def events_after_a_crash(
    persistence: str,
    make_redis: MakeRedis,
    watch: Callable[[RedisServer], Watched],
    caplog: pytest.LogCaptureFixture,
) -> tuple[list[logging.LogRecord], Captured]:
    """Beat twice on a Redis persisting as given, kill -9 and restart it, beat twice again:
    the warnings and errors logged, and the telemetry."""
    server = make_redis(persistence)
    sweeper, store, capture = watch(server)
    for _ in range(2):
        await sweeper.adopt(store, DEAD_AFTER_SECONDS)
    server.stop(kill=True)
    server.start()
    with caplog.at_level(logging.WARNING, logger="pyloto_corp"):
        for _ in range(2):
            await sweeper.adopt(store, DEAD_AFTER_SECONDS)
    events = [r for r in caplog.records if getattr(r, "event", "").startswith("store_")]
    return events, capture


async def test_a_redis_that_restarts_empty_is_reported_as_data_lost(
    make_redis: MakeRedis,
    watch: Callable[[RedisServer], Watched],
    caplog: pytest.LogCaptureFixture,
) -> None:
    events, capture = await events_after_a_crash("none", make_redis, watch, caplog)

    (lost,) = events
    assert (lost.__dict__["event"], lost.levelno) == ("store_data_lost", logging.ERROR)
    assert lost.__dict__["store_restarted"] is True
    assert lost.__dict__["lost_since"] is None  # everything Redis held is gone
    assert capture.points("pyloto.store.data_lost") == {(): 1}


async def test_a_redis_that_restarts_with_its_data_is_not_data_lost(
    make_redis: MakeRedis,
    watch: Callable[[RedisServer], Watched],
    caplog: pytest.LogCaptureFixture,
) -> None:
    events, capture = await events_after_a_crash("aof", make_redis, watch, caplog)

    assert [(r.__dict__["event"], r.levelno) for r in events] == [
        ("store_restarted", logging.WARNING)
    ]
    assert capture.points("pyloto.store.data_lost") == {}
