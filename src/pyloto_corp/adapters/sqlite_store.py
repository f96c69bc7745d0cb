"""SQLite store: the embedded default. One connection on one thread, WAL, fsync on commit.

Every call runs on a single worker thread, so concurrent tasks in one process are serialised
by the executor and each statement is its own transaction (or one explicit transaction).
"""

from __future__ import annotations

import asyncio
import fcntl
import sqlite3
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, TypeVar

import msgspec

from pyloto_corp.application.ports import StoreUnavailable
from pyloto_corp.domain.records import DELIVERY_RANK, Record, StatusUpdate

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    message_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    version INTEGER NOT NULL,
    outbound_message_id TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS records_by_state ON records (state, updated_at);
CREATE INDEX IF NOT EXISTS records_by_outbound ON records (outbound_message_id);
CREATE INDEX IF NOT EXISTS records_by_created ON records (created_at);
CREATE TABLE IF NOT EXISTS deliveries (
    outbound_message_id TEXT PRIMARY KEY,
    message_id TEXT,
    status TEXT NOT NULL,
    rank INTEGER NOT NULL,
    at INTEGER NOT NULL,
    errors BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_by_message ON deliveries (message_id);
"""

_GET = """
SELECT r.data, d.status, d.errors FROM records r
LEFT JOIN deliveries d
  ON d.outbound_message_id = r.outbound_message_id OR d.message_id = r.message_id
WHERE r.message_id = ?
ORDER BY d.rank DESC LIMIT 1
"""

# Only a later status replaces an earlier one; ties keep the first.
_STATUS = """
INSERT INTO deliveries (outbound_message_id, message_id, status, rank, at, errors)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (outbound_message_id) DO UPDATE SET
    status = excluded.status, rank = excluded.rank, at = excluded.at, errors = excluded.errors,
    message_id = COALESCE(deliveries.message_id, excluded.message_id)
WHERE excluded.rank > deliveries.rank
"""

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Record)
_errors_decoder = msgspec.json.Decoder(list[dict[str, Any]])


def _take_lock(path: Path) -> IO[str]:
    """An exclusive lock beside the database; the OS drops it if the process dies."""
    lock = open(f"{path}.lock", "a+")  # noqa: SIM115 - held until close()
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise sqlite3.OperationalError(
            f"{path} is in use by another pyloto process; one process serves one SQLite file"
        ) from None
    return lock


class SQLiteStore:
    """StateStore on a local SQLite file."""

    def __init__(
        self, path: Path, terminal_states: Collection[str], exclusive: bool = False
    ) -> None:
        """`exclusive`: hold a lock so no other process serves from the same file."""
        self.path = path
        self.exclusive = exclusive
        self._lock: IO[str] | None = None
        self._terminal = sorted(terminal_states)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pyloto-sqlite")
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            if self.path.parent != Path():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.exclusive and self._lock is None:
                self._lock = _take_lock(self.path)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: an acknowledged webhook survives a crash of the process or the machine.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.executescript(_SCHEMA)
            self._conn = conn
        return self._conn

    async def _run(self, work: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, work)
        except sqlite3.OperationalError as error:
            raise StoreUnavailable(f"sqlite: {error}") from error

    async def create_if_absent(self, records: Sequence[Record]) -> list[bool]:
        rows = [
            (r.message_id, r.state, r.version, r.created_at, r.updated_at, _encoder.encode(r))
            for r in records
        ]

        def work() -> list[bool]:
            conn = self._connect()
            created = []
            conn.execute("BEGIN IMMEDIATE")
            try:
                for row in rows:
                    cursor = conn.execute(
                        "INSERT OR IGNORE INTO records (message_id, state, version, created_at,"
                        " updated_at, data) VALUES (?, ?, ?, ?, ?, ?)",
                        row,
                    )
                    created.append(cursor.rowcount == 1)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return created

        return await self._run(work)

    async def get(self, message_id: str) -> Record | None:
        def work() -> tuple[bytes, str | None, bytes | None] | None:
            row: tuple[bytes, str | None, bytes | None] | None = (
                self._connect().execute(_GET, (message_id,)).fetchone()
            )
            return row

        row = await self._run(work)
        if row is None:
            return None
        record = _decoder.decode(row[0])
        record.delivery_status = row[1]
        record.delivery_errors = _errors_decoder.decode(row[2]) if row[2] else []
        return record

    async def save(self, record: Record, expected_version: int) -> bool:
        args = (
            record.state,
            record.version,
            record.outbound_message_id,
            record.updated_at,
            _encoder.encode(record),
            record.message_id,
            expected_version,
        )

        def work() -> bool:
            cursor = self._connect().execute(
                "UPDATE records SET state = ?, version = ?, outbound_message_id = ?,"
                " updated_at = ?, data = ? WHERE message_id = ? AND version = ?",
                args,
            )
            return cursor.rowcount == 1

        return await self._run(work)

    async def record_status(self, update: StatusUpdate) -> bool:
        rank = DELIVERY_RANK.get(update.status)
        if rank is None:
            return False
        args = (
            update.outbound_message_id,
            update.callback_data,
            update.status,
            rank,
            update.timestamp,
            _encoder.encode(update.errors),
        )

        def work() -> bool:
            return self._connect().execute(_STATUS, args).rowcount == 1

        return await self._run(work)

    async def open_records(self, older_than: float) -> list[tuple[str, str]]:
        marks = ",".join("?" * len(self._terminal))

        def work() -> list[tuple[str, str]]:
            rows = self._connect().execute(
                f"SELECT message_id, state FROM records WHERE state NOT IN ({marks})"  # noqa: S608
                " AND updated_at < ? ORDER BY updated_at",
                (*self._terminal, older_than),
            )
            return [(str(a), str(b)) for a, b in rows.fetchall()]

        return await self._run(work)

    async def purge(self, created_before: float) -> int:
        def work() -> int:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "DELETE FROM deliveries WHERE message_id IN (SELECT message_id FROM records"
                    " WHERE created_at < ?) OR outbound_message_id IN (SELECT outbound_message_id"
                    " FROM records WHERE created_at < ?) OR at < ?",
                    (created_before, created_before, created_before),
                )
                count = conn.execute(
                    "DELETE FROM records WHERE created_at < ?", (created_before,)
                ).rowcount
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return int(count)

        return await self._run(work)

    async def ping(self) -> None:
        await self._run(lambda: self._connect().execute("SELECT 1").fetchone())

    async def close(self) -> None:
        def work() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if self._lock is not None:
                self._lock.close()  # closing the file releases the lock
                self._lock = None

        await self._run(work)
        self._executor.shutdown(wait=True)
