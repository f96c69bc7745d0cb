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

from pyloto_corp.adapters.redis import RedisKeys, RedisStore, connect
from pyloto_corp.application.queues import DEAD_AFTER_SECONDS
from pyloto_corp.application.sweeper import Sweeper
from pyloto_corp.bootstrap import bootstrap, load_chart, persistence_refusal
from pyloto_corp.config import Settings
from pyloto_corp.http.app import create_app
from tests.integration.conftest import RETENTION_SECONDS, terminal_states
from tests.support.helpers import encode, envelope, signed_headers, text_message
from tests.support.redis_server import PERSISTENCE, RedisServer, free_port
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
    # RDB snapshots alone lose what came after the last one: refused too (see below).
    assert await persistence_refusal(redis_settings(make_settings, kept.url)) is not None
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


@pytest.mark.parametrize(
    ("persistence", "kept"),
    [
        ("default", "persists only RDB snapshots"),
        ("rdb", "persists only RDB snapshots"),
        ("everysec", "fsyncs its AOF `everysec`"),
    ],
)
async def test_a_redis_that_persists_less_than_every_write_is_refused_unless_accepted(
    make_redis: MakeRedis, make_settings: Callable[..., Settings], persistence: str, kept: str
) -> None:
    """Redis's own default (RDB snapshots, no AOF) and AOF fsynced every second both leave
    acknowledged writes a crash can take: refused at start, in one line naming what to set,
    unless the loss is accepted."""
    server = make_redis(persistence)

    refusal = await persistence_refusal(redis_settings(make_settings, server.url))
    assert refusal is not None
    assert kept in refusal
    assert "`appendfsync always`" in refusal
    assert "REDIS_ALLOW_NO_PERSISTENCE=true" in refusal
    accepting = redis_settings(make_settings, server.url, REDIS_DURABILITY="none")
    assert await persistence_refusal(accepting) is None


async def test_aof_fsynced_every_second_is_accepted_when_asked(
    make_redis: MakeRedis, make_settings: Callable[..., Settings]
) -> None:
    everysec, default = make_redis("everysec"), make_redis("default")
    accepting = {"REDIS_DURABILITY": "everysec"}
    assert (
        await persistence_refusal(redis_settings(make_settings, everysec.url, **accepting)) is None
    )
    refusal = await persistence_refusal(redis_settings(make_settings, default.url, **accepting))
    assert refusal is not None, "everysec still needs an AOF"


async def test_aof_fsynced_on_every_write_is_accepted(
    make_redis: MakeRedis, make_settings: Callable[..., Settings]
) -> None:
    assert await persistence_refusal(redis_settings(make_settings, make_redis("aof").url)) is None


async def post(client: AsyncTestClient, text: str) -> tuple[int, str]:  # type: ignore[type-arg]
    """Post a one-message webhook: its status and message id."""
    message = text_message(text)
    body = encode(envelope([message]))
    response = await client.post("/webhook", content=body, headers=signed_headers(body))
    return response.status_code, message["id"]


def stored(server: RedisServer, prefix: str, message_id: str) -> bool:
    client = server.client()
    try:
        return bool(client.exists(RedisKeys(prefix).record(message_id)))
    finally:
        client.close()


async def test_aof_switched_off_at_run_time_refuses_webhooks_until_it_is_on_again(
    make_redis: MakeRedis, make_settings: Callable[..., Settings], redis_prefix: str
) -> None:
    """CONFIG SET appendonly no on a running Redis: the very next webhook is answered 503 and
    stores nothing (the create script checks AOF in the same atomic step), /ready is 503 and
    says why; once AOF is back on, webhooks are acknowledged again."""
    server = make_redis("aof")
    settings = redis_settings(make_settings, server.url, REDIS_KEY_PREFIX=redis_prefix)
    admin = server.client()
    async with AsyncTestClient(app=create_app(bootstrap(settings))) as client:
        assert (await post(client, "Antes"))[0] == 200
        admin.config_set("appendonly", "no")

        status, refused = await post(client, "Depois")
        assert status == 503
        assert not stored(server, redis_prefix, refused), "a refused webhook stored nothing"
        ready = await client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["durability"] == "none"
        assert "neither AOF nor RDB" in ready.json()["not_durable"]

        admin.config_set("appendonly", "yes")
        assert (await client.get("/ready")).status_code == 200
        status, accepted = await post(client, "De volta")
        assert status == 200
        assert stored(server, redis_prefix, accepted)
    admin.close()


async def test_fsync_relaxed_at_run_time_refuses_webhooks_once_checked(
    make_redis: MakeRedis, make_settings: Callable[..., Settings]
) -> None:
    """CONFIG SET appendfsync everysec on a running Redis: seen by the next check (every
    second, or /ready's), after which webhooks get 503 until it is `always` again."""
    server = make_redis("aof")
    admin = server.client()
    async with AsyncTestClient(
        app=create_app(bootstrap(redis_settings(make_settings, server.url)))
    ) as client:
        admin.config_set("appendfsync", "everysec")
        ready = await client.get("/ready")
        assert ready.status_code == 503
        assert "`everysec`" in ready.json()["not_durable"]
        assert (await post(client, "Oi"))[0] == 503

        admin.config_set("appendfsync", "always")
        assert (await client.get("/ready")).status_code == 200
        assert (await post(client, "Oi de novo"))[0] == 200
    admin.close()


async def test_started_while_redis_is_down_then_up_without_persistence_acknowledges_nothing(
    tmp_path: Path, make_settings: Callable[..., Settings], redis_prefix: str
) -> None:
    """pyloto starts with nothing listening at REDIS_URL; a Redis that persists nothing then
    comes up there: webhooks still get 503 and nothing is stored, /ready says why. Restarted
    with AOF, the same pyloto acknowledges again."""
    server = RedisServer(tmp_path / "late-redis", "none")  # its port, not started yet
    settings = redis_settings(make_settings, server.url, REDIS_KEY_PREFIX=redis_prefix)
    try:
        async with AsyncTestClient(app=create_app(bootstrap(settings))) as client:
            assert (await post(client, "Alguém?"))[0] == 503
            server.start()
            status, refused = await post(client, "E agora?")
            assert status == 503
            assert not stored(server, redis_prefix, refused)
            ready = await client.get("/ready")
            assert ready.status_code == 503
            assert "neither AOF nor RDB" in ready.json()["not_durable"]

            server.stop(kill=True)
            server.persistence = PERSISTENCE["aof"]
            server.start()
            assert (await client.get("/ready")).status_code == 200
            status, accepted = await post(client, "Agora sim")
            assert status == 200
            assert stored(server, redis_prefix, accepted)
    finally:
        server.stop(kill=True)


async def test_a_redis_that_refuses_config_is_taken_at_its_declared_fsync(
    make_redis: MakeRedis, make_settings: Callable[..., Settings]
) -> None:
    """CONFIG refused, as on Memorystore: AOF is seen (INFO) but not its fsync policy, so
    the default requirement refuses it until REDIS_APPENDFSYNC says what the service's sync
    setting is; /ready shows `aof`."""
    server = make_redis("managed")
    refusal = await persistence_refusal(redis_settings(make_settings, server.url))
    assert refusal is not None
    assert "REDIS_APPENDFSYNC" in refusal
    declared = redis_settings(make_settings, server.url, REDIS_APPENDFSYNC="always")
    assert await persistence_refusal(declared) is None
    async with AsyncTestClient(app=create_app(bootstrap(declared))) as client:
        ready = await client.get("/ready")
        assert ready.status_code == 200
        assert ready.json()["durability"] == "aof"
        assert (await post(client, "Oi"))[0] == 200
