"""Dry-run outbox: records the exact Graph API request body instead of sending it.

Kept where the records are (SQLite or Redis), so its answer to "was this reply already
sent?" is exact for every instance that shares the store.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError

from pyloto_corp.adapters.redis_keys import DRY_RUN_LOG_LENGTH, RedisKeys
from pyloto_corp.adapters.sqlite_base import SQLiteThread
from pyloto_corp.application.ports import TransientStepError
from pyloto_corp.domain.replies import reply_key

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dry_run_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    outbound_message_id TEXT NOT NULL UNIQUE,
    callback_data TEXT,
    body TEXT NOT NULL,
    created_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
);
CREATE INDEX IF NOT EXISTS dry_run_outbox_by_callback ON dry_run_outbox (callback_data);
"""


class DryRunOutbox:
    """Outbox that appends every request it would have sent to a SQLite table."""

    # find_sent is exact (the log is written with the send): nothing to wait for.
    reconcile_seconds = 0.0

    def __init__(self, path: Path) -> None:
        self.path = path
        # A failure to write means nothing was sent: the send step may retry at once.
        self._db = SQLiteThread(path, _SCHEMA, TransientStepError, "pyloto-outbox")
        self._run = self._db.run
        self._connect = self._db.connection

    async def send(self, body: dict[str, Any]) -> str:
        outbound_id = f"wamid.dryrun.{uuid.uuid4().hex}"
        row = (outbound_id, body.get("biz_opaque_callback_data"), json.dumps(body))

        def work() -> None:
            self._connect().execute(
                "INSERT INTO dry_run_outbox (outbound_message_id, callback_data, body)"
                " VALUES (?, ?, ?)",
                row,
            )

        await self._run(work)
        return outbound_id

    async def mark_read(self, message_id: str) -> None:
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

    def __init__(self, client: redis.Redis, keys: RedisKeys, retention_seconds: float) -> None:
        self.client = client
        self.keys = keys
        self.ttl = int(retention_seconds)

    async def send(self, body: dict[str, Any]) -> str:
        outbound_id = f"wamid.dryrun.{uuid.uuid4().hex}"
        callback = str(body.get("biz_opaque_callback_data") or "")
        entry = json.dumps({"outbound_message_id": outbound_id, "body": body})
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

    async def mark_read(self, message_id: str) -> None:
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
