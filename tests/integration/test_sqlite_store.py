"""SQLite-only behaviour: unusable paths are StoreUnavailable, and one process owns a file."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from pyloto_corp.adapters.sqlite_store import SQLiteStore
from pyloto_corp.application.ports import StoreUnavailable
from tests.integration.conftest import terminal_states
from tests.integration.factories import record

pytestmark = pytest.mark.anyio


def _directory(tmp_path: Path) -> Path:
    return tmp_path


def _under_a_file(tmp_path: Path) -> Path:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("plain file")
    return blocker / "sub" / "pyloto.db"


def _beside_a_file(tmp_path: Path) -> Path:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("plain file")
    return blocker / "pyloto.db"


def _not_a_database(tmp_path: Path) -> Path:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not an SQLite database\n" * 200)
    return junk


UNUSABLE = [
    pytest.param(_directory, id="directory"),
    pytest.param(_under_a_file, id="parent-is-a-file"),
    pytest.param(_beside_a_file, id="parent-dir-is-a-file"),
    pytest.param(_not_a_database, id="not-a-database"),
]


@pytest.mark.parametrize("where", UNUSABLE)
@pytest.mark.parametrize("operation", ["ping", "get", "create_if_absent"])
async def test_unusable_path_is_store_unavailable(
    tmp_path: Path, where: Callable[[Path], Path], operation: str
) -> None:
    """A path SQLite cannot open raises StoreUnavailable (→ 503), never a raw OS/sqlite error."""
    store = SQLiteStore(where(tmp_path), terminal_states())
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "ping": store.ping,
        "get": lambda: store.get("wamid.ANY"),
        "create_if_absent": lambda: store.create_if_absent([record()]),
    }
    try:
        with pytest.raises(StoreUnavailable):
            await calls[operation]()
    finally:
        await store.close()


async def test_exclusive_store_refuses_a_second_owner(tmp_path: Path) -> None:
    """With exclusive=True a second store on the same file is unavailable until the first closes."""
    path = tmp_path / "owned.db"
    first = SQLiteStore(path, terminal_states(), exclusive=True)
    await first.ping()
    second = SQLiteStore(path, terminal_states(), exclusive=True)
    try:
        with pytest.raises(StoreUnavailable, match="in use"):
            await second.ping()
        await first.close()
        await second.ping()
    finally:
        await second.close()


async def test_store_recovers_when_the_path_becomes_usable(tmp_path: Path) -> None:
    """A failed open is not cached: once the path can be created, the same store works."""
    blocker = tmp_path / "later"
    blocker.write_text("in the way")
    store = SQLiteStore(blocker / "pyloto.db", terminal_states())
    try:
        with pytest.raises(StoreUnavailable):
            await store.ping()
        blocker.unlink()
        await store.ping()
        created = record()
        assert await store.create_if_absent([created]) == [True]
        assert await store.get(created.message_id) == created
    finally:
        await store.close()
