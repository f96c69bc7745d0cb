"""Integration fixtures: the StateStore contract runs once per store adapter.

To run the contract against another adapter (Redis, ...), write a factory like
`_sqlite_backend` and add one `pytest.param` to `store_backend`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from pyloto_corp.adapters.sqlite_store import SQLiteStore
from pyloto_corp.application.ports import StateStore
from pyloto_corp.bootstrap import load_chart


def terminal_states() -> list[str]:
    """Terminal states of the real statechart (the stores need them for open_records)."""
    return [name for name, spec in load_chart().states.items() if spec.terminal]


@dataclass
class StoreBackend:
    """One store adapter on private storage; `open()` gives a new client on the same data."""

    name: str
    open: Callable[[], StateStore]


def _sqlite_backend(tmp_path: Path) -> StoreBackend:
    path = tmp_path / "contract.db"
    terminal = terminal_states()
    return StoreBackend("sqlite", lambda: SQLiteStore(path, terminal))


@pytest.fixture(params=[pytest.param(_sqlite_backend, id="sqlite")])
def store_backend(request: pytest.FixtureRequest, tmp_path: Path) -> StoreBackend:
    """Each store adapter in turn, on storage private to the test."""
    factory: Callable[[Path], StoreBackend] = request.param
    return factory(tmp_path)


@pytest.fixture
async def store(store_backend: StoreBackend) -> AsyncIterator[StateStore]:
    """An open store of the current adapter, closed after the test."""
    opened = store_backend.open()
    yield opened
    await opened.close()
