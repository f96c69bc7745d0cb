"""Integration fixtures: the StateStore contract runs once per store adapter.

To run the contract against another adapter, write a factory like `_redis_backend` and
add one `pytest.param` to `STORE_ADAPTERS`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pyloto_corp.adapters.redis import RedisKeys, RedisStore
from pyloto_corp.adapters.redis import connect as redis_connect
from pyloto_corp.adapters.sqlite import SQLiteStore
from pyloto_corp.application.ports import StateStore
from pyloto_corp.bootstrap import load_chart
from tests.support.redis_server import RedisServer
from tests.support.telemetry_capture import HASH_KEY, Captured


def terminal_states() -> list[str]:
    """Terminal states of the real statechart (the stores need them for open_records)."""
    return [name for name, spec in load_chart().states.items() if spec.terminal]


def all_states() -> list[str]:
    """Every state of the real statechart (the Redis store counts records in each)."""
    return list(load_chart().states)


@pytest.fixture
def captured() -> Iterator[Captured]:
    """Telemetry on in-memory exporters under HASH_KEY, shut down after the test."""
    capture = Captured(HASH_KEY)
    yield capture
    capture.runtime.shutdown()


@dataclass
class StoreBackend:
    """One store adapter on private storage; `open()` gives a new client on the same data."""

    name: str
    open: Callable[[], StateStore]


def _sqlite_backend(tmp_path: Path) -> StoreBackend:
    path = tmp_path / "contract.db"
    terminal = terminal_states()
    return StoreBackend("sqlite", lambda: SQLiteStore(path, terminal))


def _redis_backend(request: pytest.FixtureRequest) -> StoreBackend:
    server: RedisServer = request.getfixturevalue("redis_server")
    keys = RedisKeys(request.getfixturevalue("redis_prefix"))
    terminal = terminal_states()

    def open_store() -> StateStore:
        return RedisStore(
            redis_connect(server.url), terminal, RETENTION_SECONDS, keys, states=all_states()
        )

    return StoreBackend("redis", open_store)


def _sqlite_from_request(request: pytest.FixtureRequest) -> StoreBackend:
    return _sqlite_backend(request.getfixturevalue("tmp_path"))


# Records in the contract tests must outlive the test (Redis applies it as a TTL).
RETENTION_SECONDS = 8 * 86400.0


# The store adapters, each on storage of its own.
STORE_ADAPTERS = [
    pytest.param(_sqlite_from_request, id="sqlite"),
    pytest.param(_redis_backend, id="redis"),
]


@pytest.fixture(params=STORE_ADAPTERS)
def store_backend(request: pytest.FixtureRequest) -> StoreBackend:
    """Each store adapter in turn, on storage private to the test."""
    factory: Callable[[pytest.FixtureRequest], StoreBackend] = request.param
    return factory(request)


@pytest.fixture
async def store(store_backend: StoreBackend) -> AsyncIterator[StateStore]:
    """An open store of the current adapter, closed after the test."""
    opened = store_backend.open()
    yield opened
    await opened.close()
