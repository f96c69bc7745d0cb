"""End-to-end fixtures: a driver over the real app, apps with other settings, a clean CLI env
and `pyloto serve` processes on Redis (the service's log lines are a fixture of the root
conftest: tests/test_llm_pipeline_e2e.py reads them too)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from pyloto_corp.bootstrap import bootstrap
from pyloto_corp.config import Settings
from pyloto_corp.http.app import create_app
from tests.e2e.servers import ServeProcess, process_env, redis_variables
from tests.e2e.support import Pyloto, isolate_cli_environment
from tests.support.redis_server import RedisServer

OpenPyloto = Callable[..., AbstractAsyncContextManager[Pyloto]]
ServeOnRedis = Callable[..., ServeProcess]


@pytest.fixture
async def pyloto(client: AsyncTestClient) -> Pyloto:  # type: ignore[type-arg]
    """The app on embedded defaults (SQLite in tmp, local queue, dry-run outbox)."""
    return Pyloto(client)


@pytest.fixture
def open_pyloto(make_settings: Callable[..., Settings]) -> OpenPyloto:
    """Start the app with extra variables: `async with open_pyloto(VAR="x") as app: ...`."""

    @asynccontextmanager
    async def open_app(**overrides: str) -> AsyncIterator[Pyloto]:
        app = create_app(bootstrap(make_settings(**overrides)))
        async with AsyncTestClient(app=app) as test_client:
            yield Pyloto(test_client)

    return open_app


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A tmp working directory and a process environment with only the test's variables.

    Returns the variables so subprocesses can be given the same environment.
    """
    return isolate_cli_environment(monkeypatch, tmp_path, "cwd")


@pytest.fixture
def serve_on_redis(redis_prefix: str, tmp_path: Path) -> Iterator[ServeOnRedis]:
    """Build `pyloto serve` processes on a Redis, all under the test's key prefix:
    `serve_on_redis(redis_server, VAR="x").start()`. Killed at the end, whatever happened."""
    built: list[ServeProcess] = []

    def create(redis_server: RedisServer, **overrides: str) -> ServeProcess:
        variables = redis_variables(redis_server.url, redis_prefix, tmp_path, **overrides)
        server = ServeProcess(process_env(variables), tmp_path / f"server-{len(built)}.log")
        built.append(server)
        return server

    yield create
    for server in built:
        server.cleanup()


@pytest.fixture
def servers() -> Iterator[list[ServeProcess]]:
    """`pyloto serve` processes a test starts (append each); killed at the end, whatever
    happened."""
    started: list[ServeProcess] = []
    yield started
    for server in started:
        server.cleanup()


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest, redis_prefix: str) -> dict[str, str]:
    """The console on each store: the embedded SQLite, and Redis (the tests' own server)."""
    if request.param == "sqlite":
        return {"OPS_CONSOLE_ENABLED": "true"}
    server = request.getfixturevalue("redis_server")
    return {
        "OPS_CONSOLE_ENABLED": "true",
        "STATE_BACKEND": "redis",
        "REDIS_URL": server.url,
        "REDIS_KEY_PREFIX": redis_prefix,
    }
