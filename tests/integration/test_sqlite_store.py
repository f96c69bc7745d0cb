"""SQLite-only behaviour: unusable paths are StoreUnavailable, and one process owns a file."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import msgspec
import pytest

from pyloto_corp.adapters.sqlite import SQLiteStore
from pyloto_corp.application.ports import RecordQuery, StoreUnavailable
from pyloto_corp.domain.results import LLMCall, Results
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


async def test_a_record_stored_with_untyped_results_still_loads(tmp_path: Path) -> None:
    """Records written while the step results were a free JSON object (kept for the 8-day
    retention) load into the typed fields; names no field has are skipped."""
    path = tmp_path / "pyloto.db"
    store = SQLiteStore(path, terminal_states())
    stored = record()
    assert await store.create_if_absent([stored]) == [True]
    old_shape = json.loads(msgspec.json.encode(stored))
    old_shape["results"] = {
        "event": "price",
        "confidence": 0.93,
        "summary": "Cliente quer saber o preço.",
        "llm1": {"latency_ms": 812.5, "input_tokens": 120, "output_tokens": 40, "model": "m"},
        "draft": "O corte custa R$ 50.",
        "message": {"type": "text", "text": {"body": "O corte custa R$ 50."}},
        "message_type": "text",
        "repairs": [],
        "downgraded_from": None,
        "template": "text",
        "fallback_step": "llm3",
        "previous_failure": "out of attempts (8): TransientStepError",
        "a_name_since_dropped": {"any": "thing"},
    }
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE records SET data = ? WHERE message_id = ?",
            (json.dumps(old_shape).encode(), stored.message_id),
        )
    try:
        loaded = await store.get(stored.message_id)
    finally:
        await store.close()
    assert loaded is not None
    assert loaded.results == Results(
        event="price",
        confidence=0.93,
        summary="Cliente quer saber o preço.",
        llm1=LLMCall(latency_ms=812.5, input_tokens=120, output_tokens=40, model="m"),
        draft="O corte custa R$ 50.",
        message={"type": "text", "text": {"body": "O corte custa R$ 50."}},
        message_type="text",
        template="text",
        fallback_step="llm3",
        previous_failure="out of attempts (8): TransientStepError",
    )
    assert replace(loaded, results=stored.results) == stored


# The records table as files written before the console's read model hold it: no
# fallback_reason column, no page indexes, no counts per state.
OLD_RECORDS_SCHEMA = """
CREATE TABLE records (
    message_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    version INTEGER NOT NULL,
    outbound_message_id TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX records_by_state ON records (state, updated_at);
CREATE INDEX records_by_outbound ON records (outbound_message_id);
CREATE INDEX records_by_created ON records (created_at);
"""


async def test_a_file_from_before_the_read_model_gets_its_counts_and_reasons(
    tmp_path: Path,
) -> None:
    """Opening a file written before the console's read model adds it: the records already
    there are counted per state once (not again at the next open), their fallback reasons
    filter pages, and later writes keep the counts right."""
    path = tmp_path / "old.db"
    old = [
        record(state="sent", updated_at=1_100.0),
        record(state="sent", updated_at=1_200.0),
        replace(record(state="fallback", updated_at=1_300.0), fallback_reason="timeout"),
    ]
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_RECORDS_SCHEMA)
        conn.executemany(
            "INSERT INTO records (message_id, state, version, created_at, updated_at, data)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [
                (r.message_id, r.state, r.version, r.created_at, r.updated_at, encode(r))
                for r in old
            ],
        )
    conn.close()

    store = SQLiteStore(path, terminal_states())
    try:
        assert await store.state_counts() == {"sent": 2, "fallback": 1}
        page = await store.list_records(RecordQuery(fallback_reason="timeout"))
        assert [r.message_id for r in page.records] == [old[2].message_id]
        assert await store.create_if_absent([record()]) == [True]
    finally:
        await store.close()

    fresh = tmp_path / "fresh.db"
    made = SQLiteStore(fresh, terminal_states())
    try:
        await made.ping()
    finally:
        await made.close()
    assert shape(path) == shape(fresh), "the old file now holds all a new one does"

    again = SQLiteStore(path, terminal_states())
    try:
        assert await again.state_counts() == {"sent": 2, "fallback": 1, "received": 1}
        queued = replace(old[2], state="queued_outbound", version=1, updated_at=1_400.0)
        assert await again.save(queued, expected_version=0)
        assert await again.state_counts() == {"sent": 2, "queued_outbound": 1, "received": 1}
        assert await again.purge(created_before=5_000.0) == 4
        assert await again.state_counts() == {}
    finally:
        await again.close()


def encode(value: object) -> bytes:
    return msgspec.json.encode(value)


def shape(path: Path) -> dict[str, object]:
    """Every table, index and trigger of the file at `path`, with each table's columns."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT type, name FROM sqlite_master").fetchall()
        found: dict[str, object] = {f"{kind} {name}": None for kind, name in rows}
        for kind, name in rows:
            if kind == "table":
                columns = conn.execute(f'PRAGMA table_info("{name}")').fetchall()
                found[f"table {name}"] = sorted((c[1], c[2], c[3]) for c in columns)
    conn.close()
    return found


async def test_a_current_file_opens_without_writing(tmp_path: Path) -> None:
    """A file already at this version's schema is opened with reads only, so a reader
    beside a writer that holds the file's write lock is not kept waiting for it."""
    path = tmp_path / "current.db"
    stored = record()
    writer = SQLiteStore(path, terminal_states())
    try:
        assert await writer.create_if_absent([stored]) == [True]
    finally:
        await writer.close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the write lock, held for the whole open below
    reader = SQLiteStore(path, terminal_states())
    try:
        assert await reader.get(stored.message_id) == stored
        assert await reader.state_counts() == {"received": 1}
    finally:
        await reader.close()
        holder.execute("ROLLBACK")
        holder.close()
