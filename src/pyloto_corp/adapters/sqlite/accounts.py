"""Console accounts, sessions and failed sign-ins in the SQLite store's file.

The tables are made here (IF NOT EXISTS, on first use) rather than in schema.sql, and every
statement runs on the store's own connection thread (`SQLiteStore.db`), so the server's
store and `pyloto users` beside it share one file without a second schema to keep in step.
"""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

from pyloto_corp.adapters.sqlite.base import SQLiteThread
from pyloto_corp.application.accounts import Account, Session
from pyloto_corp.application.ports import StoreUnavailable

SCHEMA = """
CREATE TABLE IF NOT EXISTS ops_accounts (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at REAL NOT NULL
);
-- `key` is the SHA-256 of the cookie's session id, never the id.
CREATE TABLE IF NOT EXISTS ops_sessions (
    key TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    csrf TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ops_sessions_by_name ON ops_sessions (name);
CREATE INDEX IF NOT EXISTS ops_sessions_by_end ON ops_sessions (expires_at);
-- Failed sign-ins per hashed key (an account or a client address) and fixed window.
CREATE TABLE IF NOT EXISTS ops_signin_failures (
    key TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    n INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (key, bucket)
) WITHOUT ROWID;
"""

_FAILURE = (
    "INSERT INTO ops_signin_failures (key, bucket, n, expires_at) VALUES (?, ?, 1, ?)"
    " ON CONFLICT (key, bucket) DO UPDATE SET n = n + 1 RETURNING n"
)


def _bucket(window_seconds: float, now: float) -> int:
    return math.floor(now / window_seconds)


class SQLiteAccounts:
    """AccountStore on the SQLite store's connection."""

    def __init__(self, db: SQLiteThread, owned: bool = False) -> None:
        """`db`: the store's connection thread; `owned`: this one's own, closed with it."""
        self._db = db
        self._owned = owned
        self._ready = False

    @classmethod
    def at(cls, path: Path) -> SQLiteAccounts:
        """Accounts on their own connection to `path` (for a command beside a server)."""
        return cls(SQLiteThread(path, "", StoreUnavailable, "pyloto-accounts"), owned=True)

    def _conn(self) -> sqlite3.Connection:
        conn = self._db.connection()
        if not self._ready:
            conn.executescript(SCHEMA)
            self._ready = True
        return conn

    async def add_account(self, account: Account) -> bool:
        def work() -> bool:
            cursor = self._conn().execute(
                "INSERT OR IGNORE INTO ops_accounts (name, role, password_hash, created_at)"
                " VALUES (?, ?, ?, ?)",
                (account.name, account.role, account.password_hash, account.created_at),
            )
            return cursor.rowcount == 1

        return await self._db.run(work)

    async def get_account(self, name: str) -> Account | None:
        def work() -> Account | None:
            row = (
                self._conn()
                .execute(
                    "SELECT name, role, password_hash, created_at FROM ops_accounts WHERE name = ?",
                    (name,),
                )
                .fetchone()
            )
            return Account(*row) if row else None

        return await self._db.run(work)

    async def list_accounts(self) -> list[Account]:
        def work() -> list[Account]:
            rows = self._conn().execute(
                "SELECT name, role, password_hash, created_at FROM ops_accounts ORDER BY name"
            )
            return [Account(*row) for row in rows]

        return await self._db.run(work)

    async def remove_account(self, name: str) -> bool:
        def work() -> bool:
            self._conn()

            def remove(conn: sqlite3.Connection) -> bool:
                conn.execute("DELETE FROM ops_sessions WHERE name = ?", (name,))
                gone = conn.execute("DELETE FROM ops_accounts WHERE name = ?", (name,))
                return gone.rowcount == 1

            return self._db.transaction(remove)

        return await self._db.run(work)

    async def add_session(self, session: Session, now: float) -> None:
        def work() -> None:
            conn = self._conn()
            conn.execute(
                "INSERT INTO ops_sessions (key, name, role, csrf, expires_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (session.key, session.name, session.role, session.csrf, session.expires_at),
            )
            # Ended sessions go when a new one begins: the table holds few rows.
            conn.execute("DELETE FROM ops_sessions WHERE expires_at <= ?", (now,))

        return await self._db.run(work)

    async def get_session(self, key: str, now: float) -> Session | None:
        def work() -> Session | None:
            row = (
                self._conn()
                .execute(
                    "SELECT key, name, role, csrf, expires_at FROM ops_sessions"
                    " WHERE key = ? AND expires_at > ?",
                    (key, now),
                )
                .fetchone()
            )
            return Session(*row) if row else None

        return await self._db.run(work)

    async def delete_session(self, key: str) -> None:
        def work() -> None:
            self._conn().execute("DELETE FROM ops_sessions WHERE key = ?", (key,))

        await self._db.run(work)

    async def revoke_sessions(self, name: str) -> int:
        def work() -> int:
            return self._conn().execute("DELETE FROM ops_sessions WHERE name = ?", (name,)).rowcount

        return await self._db.run(work)

    async def count_failure(self, key: str, window_seconds: float, now: float) -> int:
        bucket = _bucket(window_seconds, now)
        ends = (bucket + 2) * window_seconds  # read until the next window ends too

        def work() -> int:
            conn = self._conn()
            conn.execute("DELETE FROM ops_signin_failures WHERE expires_at <= ?", (now,))
            row = conn.execute(_FAILURE, (key, bucket, ends)).fetchone()
            return int(row[0])

        return await self._db.run(work)

    async def failures(self, key: str, window_seconds: float, now: float) -> int:
        bucket = _bucket(window_seconds, now)

        def work() -> int:
            row = (
                self._conn()
                .execute(
                    "SELECT n FROM ops_signin_failures WHERE key = ? AND bucket = ?", (key, bucket)
                )
                .fetchone()
            )
            return int(row[0]) if row else 0

        return await self._db.run(work)

    async def close(self) -> None:
        """Close its own connection; the store's closes with the store."""
        if self._owned:
            await self._db.close()
