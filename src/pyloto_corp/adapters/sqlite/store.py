"""SQLite store: the embedded default.

Calls are serialised on one thread (see base.py); each statement is its own transaction,
or one explicit transaction where several statements must agree (a save and the console's
counters it adds, for one).

The console's read model lives beside the records: `state_counts` is kept by triggers on
`records` (so no write pays for it in Python), `ops_counters` holds the counters of each
minute and hour bucket and the cost counters of each day (upserted in the transaction of the
write they count, deleted by `purge` once past their resolution's keep; `billed` marks the
outbound messages counted billable), and indexes on `updated_at` and
`fallback_reason` serve each page of records as an index range scan.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Collection, Sequence
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec

from pyloto_corp.adapters.ops_buckets import ALL_WIDTHS, WIDTHS, first_kept, first_read
from pyloto_corp.adapters.sqlite.base import SQLiteThread
from pyloto_corp.application.ports import (
    CustomerRequest,
    RecordPage,
    RecordQuery,
    StepCommit,
    StepLoad,
    StepSave,
    StoreUnavailable,
)
from pyloto_corp.domain.conversation import AUDIT_KEPT, AuditEntry, Conversation, apply_write
from pyloto_corp.domain.ops_metrics import (
    DAY,
    billable_counter,
    bucket_of,
    created_counters,
    token_amounts,
    transition_counters,
)
from pyloto_corp.domain.records import DELIVERY_RANK, FAILED_STATE, Record, StatusUpdate, Turn
from pyloto_corp.domain.replies import reply_key
from pyloto_corp.domain.writes import ConversationWrite

# The schema as this version writes it, run statement by statement (see _prepare).
SCHEMA = (
    resources.files("pyloto_corp.adapters.sqlite")
    .joinpath("schema.sql")
    .read_text(encoding="utf-8")
)


def _statements(script: str) -> list[str]:
    """The statements of `script`, each whole (a trigger's body keeps its own semicolons)."""
    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if any(line.strip() and not line.strip().startswith("--") for line in pending.splitlines()):
        raise ValueError(f"schema.sql ends inside a statement: {pending.strip()[:60]!r}")
    return statements


def _shape(conn: sqlite3.Connection) -> tuple[set[str], dict[str, set[str]]]:
    """The names a file holds (tables, indexes, triggers) and the columns of each table."""
    rows = conn.execute("SELECT name, type FROM sqlite_master").fetchall()
    names = {str(name) for name, _ in rows}
    columns = {
        str(name): {str(col[1]) for col in conn.execute(f'PRAGMA table_info("{name}")')}
        for name, kind in rows
        if kind == "table"
    }
    return names, columns


def _expected_shape() -> tuple[set[str], dict[str, set[str]]]:
    """What a file made from SCHEMA holds."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(SCHEMA)
        return _shape(conn)
    finally:
        conn.close()


_STATEMENTS = _statements(SCHEMA)
_NAMES, _COLUMNS = _expected_shape()

# Migrations: what a file written before the console's read model lacks that an IF NOT
# EXISTS cannot add. The column comes first (an index in SCHEMA names it); the counts per
# state start from the rows already there.
_FALLBACK_COLUMN = "ALTER TABLE records ADD COLUMN fallback_reason TEXT"
_FALLBACK_BACKFILL = (
    "UPDATE records SET fallback_reason = json_extract(CAST(data AS TEXT), '$.fallback_reason')"
)
_CONVERSATION_COLUMN = "ALTER TABLE records ADD COLUMN conversation TEXT"
_CONVERSATION_BACKFILL = (
    "UPDATE records SET conversation ="
    " NULLIF(json_extract(CAST(data AS TEXT), '$.conversation'), '')"
)
_STATE_COUNTS = (
    "CREATE TABLE state_counts (state TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID",
    "INSERT INTO state_counts (state, n) SELECT state, count(*) FROM records GROUP BY state",
)

_GET = """
SELECT r.data, d.status, d.errors, d.outbound_message_id FROM records r
LEFT JOIN deliveries d
  ON d.outbound_message_id = r.outbound_message_id OR d.message_id IN (?, r.message_id)
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

# One statement for every counter a write adds, whatever the bucket: (width, bucket, name, n).
_COUNT = (
    "INSERT INTO ops_counters (width, bucket, name, n) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (width, bucket, name) DO UPDATE SET n = n + excluded.n"
)
_INSERT = (
    "INSERT OR IGNORE INTO records (message_id, state, version, created_at, updated_at,"
    " fallback_reason, data, conversation) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPDATE = (
    "UPDATE records SET state = ?, version = ?, outbound_message_id = ?, updated_at = ?,"
    " fallback_reason = ?, data = ?, conversation = ? WHERE message_id = ? AND version = ?"
)
_CONVERSATION = (
    "SELECT key, mode, since, reason, owner, customer_at, last_message, agent_at, version"
    " FROM conversations"
)
_CONVERSATION_PUT = (
    "INSERT INTO conversations (key, mode, since, reason, owner, customer_at, last_message,"
    " agent_at, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET"
    " mode = excluded.mode, since = excluded.since, reason = excluded.reason,"
    " owner = excluded.owner, customer_at = excluded.customer_at,"
    " last_message = excluded.last_message, agent_at = excluded.agent_at,"
    " version = excluded.version"
)
# The most records one page of list_records returns.
MAX_PAGE = 500
# Aliases followed at most, so a loop of changed BSUIDs cannot hold a resolution forever.
ALIAS_HOPS = 4
_ALIAS = (
    "INSERT INTO aliases (alias, customer, at) VALUES (?, ?, ?)"
    " ON CONFLICT (alias) DO UPDATE SET customer = excluded.customer, at = excluded.at"
)

CounterRow = tuple[int, int, str, int]
SaveArgs = tuple[str, int, str | None, float, str | None, bytes, str | None, str, int]
ConversationRow = tuple[str, str, float, str, str, float, str, float, int]


def _conversation(row: ConversationRow, audit: tuple[AuditEntry, ...] = ()) -> Conversation:
    key, mode, since, reason, owner, customer_at, last_message, agent_at, version = row
    return Conversation(
        key, mode, since, reason, owner, customer_at, last_message, agent_at, version, audit
    )


def _prepare(conn: sqlite3.Connection) -> None:
    """Make a new file, or bring one written by an earlier version up to SCHEMA, in one
    transaction; nothing is written when nothing is missing (so a reader beside a server
    takes no lock)."""
    if _current(conn):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        names, columns = _shape(conn)
        if "records" in names:  # a file of an earlier version
            if "fallback_reason" not in columns["records"]:
                conn.execute(_FALLBACK_COLUMN)
                conn.execute(_FALLBACK_BACKFILL)
            if "conversation" not in columns["records"]:
                conn.execute(_CONVERSATION_COLUMN)
                conn.execute(_CONVERSATION_BACKFILL)
            if "state_counts" not in names:
                for statement in _STATE_COUNTS:
                    conn.execute(statement)
        for statement in _STATEMENTS:
            conn.execute(statement)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _current(conn: sqlite3.Connection) -> bool:
    """Whether the file holds every table, column, index and trigger of SCHEMA."""
    names, columns = _shape(conn)
    return names >= _NAMES and all(
        wanted <= columns.get(table, set()) for table, wanted in _COLUMNS.items()
    )


def _counter_rows(names: Sequence[str], at: float, n: int = 1) -> list[CounterRow]:
    """The counters `names` at time `at`, `n` each, in every bucket width."""
    return [(width, bucket_of(at, width), name, n) for width in WIDTHS for name in names]


def _day_rows(amounts: Sequence[tuple[str, int]], at: float) -> list[CounterRow]:
    """The day counters `amounts` ({name: how much}) at time `at`."""
    day = bucket_of(at, DAY)
    return [(DAY, day, name, n) for name, n in amounts]


def _page_query(query: RecordQuery, limit: int) -> tuple[str, list[Any]]:
    """The SELECT of one page: every filter is a range of one index on the last update."""
    clauses: list[str] = []
    args: list[Any] = []
    for clause, value in (
        ("state = ?", query.state),
        ("fallback_reason = ?", query.fallback_reason),
        ("updated_at >= ?", query.since),
        ("updated_at < ?", query.until),
    ):
        if value is not None:
            clauses.append(clause)
            args.append(value)
    if query.before is not None:
        at, message_id = query.before
        clauses.append("updated_at <= ? AND (updated_at < ? OR message_id < ?)")
        args += [at, at, message_id]
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    sql = (
        f"SELECT data, updated_at, message_id FROM records{where}"  # noqa: S608 - constant parts
        " ORDER BY updated_at DESC, message_id DESC LIMIT ?"
    )
    return sql, [*args, limit]


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Record)
_errors_decoder = msgspec.json.Decoder(list[dict[str, Any]])


class SQLiteStore:
    """StateStore on a local SQLite file."""

    def __init__(
        self, path: Path, terminal_states: Collection[str], exclusive: bool = False
    ) -> None:
        """`exclusive`: hold a lock so no other process serves from the same file."""
        self.path = path

        def prepare(conn: sqlite3.Connection) -> None:
            _prepare(conn)
            if exclusive:  # the sole process on this file: a dead one's leases mean nothing
                conn.execute("DELETE FROM leases")

        self._db = SQLiteThread(
            path, "", StoreUnavailable, "pyloto-sqlite", exclusive, migrate=prepare
        )
        self._terminal = sorted(terminal_states)

    @property
    def db(self) -> SQLiteThread:
        """The connection thread, which the console's accounts (accounts.py) share."""
        return self._db

    async def create_if_absent(self, records: Sequence[Record]) -> list[bool]:
        rows = [
            (
                r.message_id,
                r.state,
                r.version,
                r.created_at,
                r.updated_at,
                r.fallback_reason,
                _encoder.encode(r),
                r.conversation or None,
            )
            for r in records
        ]

        def work(conn: sqlite3.Connection) -> list[bool]:
            created = [conn.execute(_INSERT, row).rowcount == 1 for row in rows]
            # The records created (not those that existed) counted per creation time: a
            # batch usually shares one, so this is one row per counter and width.
            times: dict[float, int] = {}
            for r, new in zip(records, created, strict=True):
                if new:
                    times[r.created_at] = times.get(r.created_at, 0) + 1
            counts = [
                row for at, n in times.items() for row in _counter_rows(created_counters(), at, n)
            ]
            if counts:
                conn.executemany(_COUNT, counts)
            return created

        return await self._db.run(lambda: self._db.transaction(work))

    async def get(self, message_id: str) -> Record | None:
        return await self._db.run(lambda: self._get(message_id))

    def _get(self, message_id: str) -> Record | None:
        row: tuple[bytes, str | None, bytes | None, str | None] | None = (
            self._db.connection().execute(_GET, (reply_key(message_id), message_id)).fetchone()
        )
        if row is None:
            return None
        record = _decoder.decode(row[0])
        record.delivery_status = row[1]
        record.delivery_errors = _errors_decoder.decode(row[2]) if row[2] else []
        record.delivery_outbound_id = row[3] if row[1] else None
        return record

    async def save(self, record: Record, expected_version: int) -> bool:
        args, counts = self._save_call(record, expected_version)
        if not counts:  # one statement is its own transaction
            return await self._db.run(lambda: self._save(self._db.connection(), args, counts))
        return await self._db.run(
            lambda: self._db.transaction(lambda conn: self._save(conn, args, counts))
        )

    @staticmethod
    def _save_call(record: Record, expected_version: int) -> tuple[SaveArgs, list[CounterRow]]:
        """The UPDATE's arguments and the counters the save adds if it happens."""
        args = (
            record.state,
            record.version,
            record.outbound_message_id,
            record.updated_at,
            record.fallback_reason,
            _encoder.encode(record),
            record.conversation or None,
            record.message_id,
            expected_version,
        )
        at = record.updated_at
        return args, _counter_rows(transition_counters(record), at) + _day_rows(
            token_amounts(record), at
        )

    @staticmethod
    def _save(conn: sqlite3.Connection, args: SaveArgs, counts: list[CounterRow]) -> bool:
        """The version-checked UPDATE and, if it saved, its counters (the caller holds a
        transaction when there are any)."""
        saved = conn.execute(_UPDATE, args).rowcount == 1
        if saved and counts:
            conn.executemany(_COUNT, counts)
        return saved

    async def lease_step(
        self,
        name: str,
        owner: str,
        seconds: float,
        message_id: str,
        turns: int = 0,
        records: int = 0,
    ) -> StepLoad:
        def work() -> StepLoad:  # one hop to the database thread
            taken = self._db.transaction(lambda conn: self._acquire(conn, name, owner, seconds))
            if not taken:
                return StepLoad(False)
            record = self._get(message_id)
            if record is None or not record.conversation:
                return StepLoad(True, record)
            conn = self._db.connection()
            conversation = self._conversation(conn, record.conversation, audit=False)
            recent = self._recent(record.conversation, None, turns) if turns > 0 else None
            listed = self._listed(record.conversation, records) if records > 0 else None
            return StepLoad(True, record, recent, conversation, listed)

        return await self._db.run(work)

    async def finish_step(self, commit: StepCommit) -> StepSave:
        record, expected_version = commit.record, commit.expected_version
        name, owner, next_lease = commit.lease.name, commit.lease.owner, commit.next_lease
        slot, turns, customer = commit.writes.slot, commit.writes.turns, commit.writes.customer
        args, counts = self._save_call(record, expected_version)

        chat = commit.writes.conversation

        def work(conn: sqlite3.Connection) -> StepSave:
            saved, taken, wait, key, mode_changed = False, False, 0.0, "", False
            found = conn.execute(
                "SELECT version FROM records WHERE message_id = ?", (record.message_id,)
            ).fetchone()
            if found is not None and found[0] == expected_version:
                # The mode the conversation write expects is checked before anything.
                mode_changed = chat is not None and self._refused(conn, chat, customer)
                if slot is not None and not mode_changed:  # none taken for a stale save
                    wait = self._take(conn, slot.key, slot.now, slot.per_seconds, slot.burst)
                if wait <= 0 and not mode_changed:
                    save_args = args
                    if customer is not None:  # saved as the record's own conversation
                        key = self._resolve(conn, customer.phone_key, customer.user_key)
                        save_args, _ = self._save_call(
                            replace(record, conversation=key), expected_version
                        )
                    saved = self._save(conn, save_args, counts)
                    if saved and chat is not None:
                        # Resolved again (the accept's key follows the same aliases).
                        self._change(conn, chat.key or key, chat)
            if turns is not None and turns.turns:
                self._append(
                    conn, turns.conversation, turns.turns, turns.window_seconds, turns.keep
                )
            conn.execute("DELETE FROM leases WHERE name = ? AND owner = ?", (name, owner))
            if saved and next_lease is not None:
                taken = self._acquire(conn, next_lease.name, next_lease.owner, next_lease.seconds)
            return StepSave(saved, wait, taken, key if saved else "", mode_changed)

        return await self._db.run(lambda: self._db.transaction(work))

    def _refused(
        self, conn: sqlite3.Connection, write: ConversationWrite, customer: CustomerRequest | None
    ) -> bool:
        """Whether the conversation is not in the mode `write` expects; its key '' is the
        customer key the save resolves (looked up here without writing anything)."""
        key = write.key
        if not key and customer is not None:
            key = self._follow(conn, customer.user_key or customer.phone_key or "")
        return apply_write(self._conversation(conn, key, audit=False), key, write) is None

    def _conversation(
        self, conn: sqlite3.Connection, key: str, audit: bool = True
    ) -> Conversation | None:
        row = conn.execute(f"{_CONVERSATION} WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        if not audit:
            return _conversation(row)
        entries = conn.execute(
            "SELECT at, who, action FROM conversation_audit WHERE conversation = ?"
            " ORDER BY seq DESC LIMIT ?",
            (key, AUDIT_KEPT),
        ).fetchall()
        return _conversation(row, tuple(AuditEntry(*entry) for entry in reversed(entries)))

    def _change(
        self, conn: sqlite3.Connection, key: str, write: ConversationWrite
    ) -> Conversation | None:
        """`write` applied to the conversation `key` inside the caller's transaction."""
        changed = apply_write(self._conversation(conn, key, audit=False), key, write)
        if changed is None:
            return None
        conn.execute(
            _CONVERSATION_PUT,
            (
                key,
                changed.mode,
                changed.since,
                changed.reason,
                changed.owner,
                changed.customer_at,
                changed.last_message,
                changed.agent_at,
                changed.version,
            ),
        )
        if write.audit is not None:
            who, action = write.audit
            conn.execute(
                "INSERT INTO conversation_audit (conversation, at, who, action)"
                " VALUES (?, ?, ?, ?)",
                (key, write.at, who, action),
            )
            conn.execute(
                "DELETE FROM conversation_audit WHERE conversation = ? AND seq <= ("
                " SELECT seq FROM conversation_audit WHERE conversation = ?"
                " ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                (key, key, AUDIT_KEPT),
            )
        return self._conversation(conn, key)

    async def get_conversation(self, key: str) -> Conversation | None:
        return await self._db.run(lambda: self._conversation(self._db.connection(), key))

    async def change_conversation(self, key: str, write: ConversationWrite) -> Conversation | None:
        return await self._db.run(
            lambda: self._db.transaction(lambda conn: self._change(conn, key, write))
        )

    async def list_conversations(self, mode: str | None, limit: int) -> list[Conversation]:
        def work() -> list[Conversation]:
            conn = self._db.connection()
            if mode is None:
                rows = conn.execute(
                    f"{_CONVERSATION} ORDER BY since, key LIMIT ?", (limit,)
                ).fetchall()
            else:
                rows = conn.execute(
                    f"{_CONVERSATION} WHERE mode = ? ORDER BY since, key LIMIT ?", (mode, limit)
                ).fetchall()
            return [_conversation(row) for row in rows]

        return await self._db.run(work)

    async def conversation_records(self, key: str, limit: int) -> list[Record]:
        return await self._db.run(lambda: self._listed(key, limit))

    async def customer_of(self, key: str) -> str:
        return await self._db.run(lambda: self._follow(self._db.connection(), key))

    def _listed(self, key: str, limit: int) -> list[Record]:
        """The conversation's last `limit` records, oldest first (on the database thread)."""
        rows = (
            self._db.connection()
            .execute(
                "SELECT message_id FROM records WHERE conversation = ?"
                " ORDER BY created_at DESC, message_id DESC LIMIT ?",
                (key, max(0, limit)),
            )
            .fetchall()
        )
        found = [self._get(message_id) for (message_id,) in reversed(rows)]
        return [record for record in found if record is not None]

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
        return await self._db.run(
            lambda: self._db.connection().execute(_STATUS, args).rowcount == 1
        )

    async def count_billable(self, outbound_message_id: str, category: str, at: float) -> bool:
        row = (DAY, bucket_of(at, DAY), billable_counter(category), 1)

        def work(conn: sqlite3.Connection) -> bool:
            first = (
                conn.execute(
                    "INSERT OR IGNORE INTO billed (outbound_message_id, at) VALUES (?, ?)",
                    (outbound_message_id, at),
                ).rowcount
                == 1
            )
            if first:
                conn.execute(_COUNT, row)
            return first

        return await self._db.run(lambda: self._db.transaction(work))

    async def open_records(self, older_than: float) -> list[tuple[str, str]]:
        marks = ",".join("?" * len(self._terminal))

        def work() -> list[tuple[str, str]]:
            rows = self._db.connection().execute(
                f"SELECT message_id, state FROM records WHERE state NOT IN ({marks})"  # noqa: S608
                " AND updated_at < ? ORDER BY updated_at",
                (*self._terminal, older_than),
            )
            return [(str(a), str(b)) for a, b in rows.fetchall()]

        return await self._db.run(work)

    async def failed_records(self, since: float | None, limit: int) -> list[str]:
        args = (FAILED_STATE, float("-inf") if since is None else since, limit)

        def work() -> list[str]:
            rows = self._db.connection().execute(
                "SELECT message_id FROM records WHERE state = ? AND updated_at >= ?"
                " ORDER BY updated_at LIMIT ?",
                args,
            )
            return [str(row[0]) for row in rows.fetchall()]

        return await self._db.run(work)

    async def purge(self, created_before: float) -> int:
        """Also deletes the console's buckets older than their resolution keeps."""
        now = time.time()

        def work(conn: sqlite3.Connection) -> int:
            ids = conn.execute(
                "SELECT message_id FROM records WHERE created_at < ?", (created_before,)
            )
            # Statuses name their record by its reply key (older ones by its id).
            conn.executemany(
                "DELETE FROM deliveries WHERE message_id IN (?, ?)",
                [(reply_key(message_id), message_id) for (message_id,) in ids.fetchall()],
            )
            conn.execute(
                "DELETE FROM deliveries WHERE outbound_message_id IN (SELECT outbound_message_id"
                " FROM records WHERE created_at < ?) OR at < ?",
                (created_before, created_before),
            )
            conn.execute("DELETE FROM turns WHERE at < ?", (created_before,))
            conn.execute("DELETE FROM pacing WHERE at < ?", (created_before,))
            conn.execute("DELETE FROM aliases WHERE at < ?", (created_before,))
            # A conversation nobody wrote in since the retention, back with the bot, goes.
            conn.execute(
                "DELETE FROM conversation_audit WHERE conversation IN (SELECT key FROM"
                " conversations WHERE mode = 'bot' AND customer_at < ? AND since < ?)",
                (created_before, created_before),
            )
            conn.execute(
                "DELETE FROM conversations WHERE mode = 'bot' AND customer_at < ? AND since < ?",
                (created_before, created_before),
            )
            conn.executemany(
                "DELETE FROM ops_counters WHERE width = ? AND bucket < ?",
                [(width, first_kept(width, now)) for width in ALL_WIDTHS],
            )
            conn.execute("DELETE FROM billed WHERE at < ?", (created_before,))
            return int(
                conn.execute("DELETE FROM records WHERE created_at < ?", (created_before,)).rowcount
            )

        return await self._db.run(lambda: self._db.transaction(work))

    async def state_counts(self) -> dict[str, int]:
        def work() -> dict[str, int]:
            rows = self._db.connection().execute("SELECT state, n FROM state_counts WHERE n > 0")
            return {str(state): int(n) for state, n in rows.fetchall()}

        return await self._db.run(work)

    async def counter_buckets(self, width: int, since: float) -> list[tuple[int, dict[str, int]]]:
        first = first_read(width, since, time.time())  # ValueError for an unknown width

        def work() -> list[tuple[int, dict[str, int]]]:
            rows = self._db.connection().execute(
                "SELECT bucket, name, n FROM ops_counters WHERE width = ? AND bucket >= ?"
                " ORDER BY bucket",
                (width, first),
            )
            buckets: dict[int, dict[str, int]] = {}
            for bucket, name, n in rows.fetchall():
                buckets.setdefault(int(bucket), {})[str(name)] = int(n)
            return list(buckets.items())

        return await self._db.run(work)

    async def list_records(self, query: RecordQuery) -> RecordPage:
        limit = min(query.limit, MAX_PAGE)
        if limit <= 0:
            return RecordPage([], None)
        sql, args = _page_query(query, limit + 1)  # one more: whether a next page exists

        def work() -> list[tuple[bytes, float, str]]:
            return list(self._db.connection().execute(sql, args).fetchall())

        rows = await self._db.run(work)
        records = [_decoder.decode(data) for data, _, _ in rows[:limit]]
        last = rows[limit - 1] if len(rows) > limit else None
        return RecordPage(records, None if last is None else (float(last[1]), str(last[2])))

    @staticmethod
    def _append(
        conn: sqlite3.Connection,
        conversation: str,
        turns: Sequence[Turn],
        window_seconds: float,
        keep: int,
    ) -> None:
        rows = [(conversation, t.role, t.text, t.at) for t in turns]
        newest = max((t.at for t in turns), default=time.time())
        conn.executemany(
            "INSERT INTO turns (conversation, role, text, at) VALUES (?, ?, ?, ?)", rows
        )
        conn.execute(
            "DELETE FROM turns WHERE conversation = ? AND (at < ? OR seq NOT IN"
            " (SELECT seq FROM turns WHERE conversation = ? ORDER BY seq DESC LIMIT ?))",
            (conversation, newest - window_seconds, conversation, keep),
        )

    async def recent_turns(self, conversation: str, since: float, limit: int) -> list[Turn]:
        return await self._db.run(lambda: self._recent(conversation, since, limit))

    def _recent(self, conversation: str, since: float | None, limit: int) -> list[Turn]:
        rows = self._db.connection().execute(
            "SELECT role, text, at FROM turns WHERE conversation = ? AND at >= ?"
            " ORDER BY seq DESC LIMIT ?",
            (conversation, float("-inf") if since is None else since, limit),
        )
        return [Turn(str(r), str(t), float(a)) for r, t, a in reversed(rows.fetchall())]

    def _resolve(
        self, conn: sqlite3.Connection, phone_key: str | None, user_key: str | None
    ) -> str:
        """The customer key a `CustomerRequest` stands for (see `ports.CustomerKeys`), inside
        the caller's transaction."""
        if not user_key:
            return self._follow(conn, phone_key) if phone_key else ""
        customer = self._follow(conn, user_key)
        if phone_key and phone_key != customer:
            self._move_turns(conn, phone_key, customer)
            conn.execute(_ALIAS, (phone_key, customer, time.time()))
        return customer

    async def move_customer(self, previous_key: str, current_key: str) -> None:
        def work(conn: sqlite3.Connection) -> None:
            if previous_key == current_key:
                return
            if self._follow(conn, current_key) == previous_key:  # changed back: no loop
                conn.execute("DELETE FROM aliases WHERE alias = ?", (current_key,))
            self._move_turns(conn, previous_key, current_key)
            conn.execute(_ALIAS, (previous_key, current_key, time.time()))

        await self._db.run(lambda: self._db.transaction(work))

    @staticmethod
    def _follow(conn: sqlite3.Connection, key: str) -> str:
        """The customer key `key` stands for, through its aliases."""
        for _ in range(ALIAS_HOPS):
            row = conn.execute("SELECT customer FROM aliases WHERE alias = ?", (key,)).fetchone()
            if row is None or row[0] == key:
                break
            key = str(row[0])
        return key

    @staticmethod
    def _move_turns(conn: sqlite3.Connection, source: str, target: str) -> None:
        """The turns and the conversation (mode, window, audit trail) of `source` become
        `target`'s, each unless `target` has its own."""
        if not conn.execute("SELECT 1 FROM turns WHERE conversation = ?", (target,)).fetchone():
            conn.execute(
                "UPDATE turns SET conversation = ? WHERE conversation = ?", (target, source)
            )
        if conn.execute("SELECT 1 FROM conversations WHERE key = ?", (target,)).fetchone():
            return
        conn.execute("UPDATE conversations SET key = ? WHERE key = ?", (target, source))
        conn.execute(
            "UPDATE conversation_audit SET conversation = ? WHERE conversation = ?",
            (target, source),
        )

    @staticmethod
    def _acquire(conn: sqlite3.Connection, name: str, owner: str, seconds: float) -> bool:
        now = time.time()
        conn.execute("DELETE FROM leases WHERE name = ? AND expires_at <= ?", (name, now))
        inserted = conn.execute(
            "INSERT OR IGNORE INTO leases (name, owner, expires_at) VALUES (?, ?, ?)",
            (name, owner, now + seconds),
        )
        return inserted.rowcount == 1

    @staticmethod
    def _take(
        conn: sqlite3.Connection, key: str, now: float, per_seconds: float, burst: int
    ) -> float:
        row = conn.execute("SELECT tokens, at FROM pacing WHERE key = ?", (key,)).fetchone()
        tokens, at = (float(row[0]), float(row[1])) if row else (float(burst), now)
        if now > at:
            tokens, at = min(float(burst), tokens + (now - at) / per_seconds), now
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) * per_seconds
        conn.execute(
            "INSERT INTO pacing (key, tokens, at) VALUES (?, ?, ?) ON CONFLICT (key)"
            " DO UPDATE SET tokens = excluded.tokens, at = excluded.at",
            (key, tokens, at),
        )
        return wait

    async def release_lease(self, name: str, owner: str) -> None:
        await self._db.run(
            lambda: self._db.connection().execute(
                "DELETE FROM leases WHERE name = ? AND owner = ?", (name, owner)
            )
        )

    async def ping(self) -> None:
        await self._db.run(lambda: self._db.connection().execute("SELECT 1").fetchone())

    async def durability(self) -> str:
        return "sqlite"  # WAL, synchronous=FULL: a commit is on disk before it returns

    async def close(self) -> None:
        await self._db.close()
