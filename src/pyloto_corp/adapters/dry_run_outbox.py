"""Dry-run outbox: records the exact Graph API request body instead of sending it.

Kept where the records are (SQLite or Redis), so its answer to "was this reply already
sent?" is exact for every instance that shares the store.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError

from pyloto_corp.adapters.redis.keys import DRY_RUN_LOG_LENGTH, RedisKeys
from pyloto_corp.adapters.sqlite.base import SQLiteThread
from pyloto_corp.application.ports import PermanentStepError, TransientStepError
from pyloto_corp.domain.replies import reply_key

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dry_run_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    outbound_message_id TEXT NOT NULL UNIQUE,
    callback_data TEXT,
    body TEXT NOT NULL,
    phone_number_id TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
);
CREATE INDEX IF NOT EXISTS dry_run_outbox_by_callback ON dry_run_outbox (callback_data);
"""


# What a refused send reads as in the record's failure reason.
REFUSED_REASON = "dry run: send refused as asked (pyloto simulate --fail-send)"
# Refusals kept waiting for their reply at most: older ones are dropped first.
MAX_REFUSALS = 1000


class SendRefusals:
    """Replies this process's dry-run outbox refuses once, by the record they answer: the
    local way to make a dead letter (`pyloto simulate --fail-send`). Kept in memory, so
    they end with the process; a refused reply's replay sends, the refusal being spent."""

    def __init__(self) -> None:
        self._keys: dict[str, None] = {}

    def refuse(self, message_id: str) -> None:
        """The next send of the reply to record `message_id` fails permanently."""
        self._keys[reply_key(message_id)] = None
        while len(self._keys) > MAX_REFUSALS:
            del self._keys[next(iter(self._keys))]

    def check(self, body: dict[str, Any]) -> None:
        """PermanentStepError (and the refusal spent) when this reply is to be refused."""
        key = body.get("biz_opaque_callback_data")
        if isinstance(key, str) and self._keys.pop(key, 0) is None:
            raise PermanentStepError(REFUSED_REASON)


def _add_number_column(connection: sqlite3.Connection) -> None:
    """A file written before replies named their business number gets the column ('' for
    the requests it already holds: they went from the default number)."""
    columns = {row[1] for row in connection.execute("PRAGMA table_info(dry_run_outbox)")}
    if "phone_number_id" not in columns:
        connection.execute(
            "ALTER TABLE dry_run_outbox ADD COLUMN phone_number_id TEXT NOT NULL DEFAULT ''"
        )


class DryRunOutbox:
    """Outbox that appends every request it would have sent, with the business number it
    would have gone from (`default_number` for a request naming none), to a SQLite table."""

    # find_sent is exact (the log is written with the send): nothing to wait for.
    reconcile_seconds = 0.0

    def __init__(self, path: Path, default_number: str = "") -> None:
        self.path = path
        self.default_number = default_number
        self.refusals = SendRefusals()
        # A failure to write means nothing was sent: the send step may retry at once.
        self._db = SQLiteThread(
            path, _SCHEMA, TransientStepError, "pyloto-outbox", migrate=_add_number_column
        )
        self._run = self._db.run
        self._connect = self._db.connection

    async def send(self, body: dict[str, Any], phone_number_id: str = "") -> str:
        self.refusals.check(body)
        outbound_id = f"wamid.dryrun.{uuid.uuid4().hex}"
        number = phone_number_id or self.default_number
        row = (outbound_id, body.get("biz_opaque_callback_data"), json.dumps(body), number)

        def work() -> None:
            self._connect().execute(
                "INSERT INTO dry_run_outbox"
                " (outbound_message_id, callback_data, body, phone_number_id)"
                " VALUES (?, ?, ?, ?)",
                row,
            )

        await self._run(work)
        return outbound_id

    async def mark_read(self, message_id: str, phone_number_id: str = "") -> None:
        """Nothing to mark: no message reached WhatsApp."""

    async def find_sent(self, message_id: str) -> str | None:
        callback_data = reply_key(message_id)

        def work() -> str | None:
            row = (
                self._connect()
                .execute(
                    "SELECT outbound_message_id FROM dry_run_outbox WHERE callback_data = ?"
                    " ORDER BY seq LIMIT 1",
                    (callback_data,),
                )
                .fetchone()
            )
            return str(row[0]) if row else None

        return await self._run(work)

    async def sent(self, message_id: str | None = None) -> list[dict[str, Any]]:
        """Recorded request bodies, oldest first (all, or the replies to one record)."""

        def work() -> list[dict[str, Any]]:
            query = "SELECT body FROM dry_run_outbox"
            args: tuple[str, ...] = ()
            if message_id is not None:
                query, args = query + " WHERE callback_data = ?", (reply_key(message_id),)
            rows = self._connect().execute(query + " ORDER BY seq", args).fetchall()
            return [json.loads(row[0]) for row in rows]

        return await self._run(work)

    async def sent_numbers(self, message_id: str) -> list[str]:
        """The business number each reply to record `message_id` went from, oldest first."""

        def work() -> list[str]:
            rows = (
                self._connect()
                .execute(
                    "SELECT phone_number_id FROM dry_run_outbox WHERE callback_data = ?"
                    " ORDER BY seq",
                    (reply_key(message_id),),
                )
                .fetchall()
            )
            return [str(row[0]) for row in rows]

        return await self._run(work)

    async def purge(self, created_before: float) -> int:
        """Delete recorded requests older than the retention limit (they hold phone numbers)."""

        def work() -> int:
            cursor = self._connect().execute(
                "DELETE FROM dry_run_outbox WHERE created_at < ?", (created_before,)
            )
            return int(cursor.rowcount)

        return await self._run(work)

    async def close(self) -> None:
        """Close the connection."""
        await self._db.close()


class RedisDryRunOutbox:
    """Dry-run outbox in Redis, shared by every instance that shares the store."""

    # find_sent is exact (the log is written with the send): nothing to wait for.
    reconcile_seconds = 0.0

    def __init__(
        self,
        client: redis.Redis,
        keys: RedisKeys,
        retention_seconds: float,
        default_number: str = "",
    ) -> None:
        self.client = client
        self.keys = keys
        self.ttl = int(retention_seconds)
        self.default_number = default_number
        self.refusals = SendRefusals()

    async def send(self, body: dict[str, Any], phone_number_id: str = "") -> str:
        self.refusals.check(body)
        outbound_id = f"wamid.dryrun.{uuid.uuid4().hex}"
        callback = str(body.get("biz_opaque_callback_data") or "")
        number = phone_number_id or self.default_number
        entry = json.dumps(
            {"outbound_message_id": outbound_id, "body": body, "phone_number_id": number}
        )
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.rpush(self.keys.dry_run_log, entry)
                pipe.ltrim(self.keys.dry_run_log, -DRY_RUN_LOG_LENGTH, -1)
                pipe.expire(self.keys.dry_run_log, self.ttl)
                if callback:
                    pipe.set(self.keys.dry_run_sent(callback), outbound_id, nx=True, ex=self.ttl)
                await pipe.execute()
        except RedisError as error:
            raise TransientStepError(f"dry-run outbox: {error}") from error
        return outbound_id

    async def mark_read(self, message_id: str, phone_number_id: str = "") -> None:
        """Nothing to mark: no message reached WhatsApp."""

    async def find_sent(self, message_id: str) -> str | None:
        try:
            found = await self.client.get(self.keys.dry_run_sent(reply_key(message_id)))
        except RedisError as error:
            raise TransientStepError(f"dry-run outbox: {error}") from error
        return found.decode() if isinstance(found, bytes) else None

    async def sent(self, message_id: str | None = None) -> list[dict[str, Any]]:
        """Recorded request bodies, oldest first (all, or the replies to one record)."""
        entries = await self.client.lrange(self.keys.dry_run_log, 0, -1)
        bodies = [json.loads(entry)["body"] for entry in entries]
        if message_id is None:
            return bodies
        key = reply_key(message_id)
        return [b for b in bodies if b.get("biz_opaque_callback_data") == key]

    async def sent_numbers(self, message_id: str) -> list[str]:
        """The business number each reply to record `message_id` went from, oldest first."""
        key = reply_key(message_id)
        entries = [
            json.loads(entry) for entry in await self.client.lrange(self.keys.dry_run_log, 0, -1)
        ]
        return [
            str(entry.get("phone_number_id", ""))
            for entry in entries
            if entry["body"].get("biz_opaque_callback_data") == key
        ]
