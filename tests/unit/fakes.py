"""In-memory implementations of pyloto's own ports (StateStore, TaskQueue, Outbox) and a clock.

They keep the contracts the use cases rely on (copies in and out, version-checked saves,
monotonic statuses) and record what was asked of them, so tests can assert on it.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import anyio

from pyloto_corp.adapters.ops_buckets import first_kept, first_read
from pyloto_corp.application.ports import (
    RecordPage,
    RecordQuery,
    StepCommit,
    StepLoad,
    StepSave,
    Task,
)
from pyloto_corp.domain.conversation import Conversation, apply_write
from pyloto_corp.domain.ops_metrics import (
    DAY,
    HOUR,
    MINUTE,
    billable_counter,
    bucket_of,
    created_counters,
    token_amounts,
    transition_counters,
)
from pyloto_corp.domain.records import Record, StatusUpdate, Turn
from pyloto_corp.domain.replies import reply_key
from pyloto_corp.domain.writes import ConversationWrite
from tests.support.helpers import shipped_templates

# The type of the `make_record` fixture (tests/unit/conftest.py).
# The shipped reply templates for the default business, as bootstrap reads them.
TEMPLATES = shipped_templates()

MakeRecord = Callable[..., Record]
# Builds a record as MakeRecord does and puts it in the store.
PutRecord = Callable[..., Record]


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, now: float = 1_732_531_200.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


class FakeStore:
    """StateStore in a dict. Records are copied on the way in and out, like a real store,
    and it passes the store contract (tests/integration/test_store_contract.py) that the
    real stores pass.

    `get` yields to the event loop once, so two concurrent tasks can both read a record
    before either saves it (the race the version check exists for).
    """

    def __init__(self, terminal_states: Sequence[str] = ("sent", "failed", "ignored")) -> None:
        self.records: dict[str, Record] = {}
        self.statuses: dict[str, StatusUpdate] = {}
        self.saves: list[Record] = []
        self.leases: dict[str, str] = {}  # lease name -> owner
        self.lease_ends: dict[str, float] = {}  # lease name -> when it expires (monotonic)
        self.turns: dict[str, list[Turn]] = {}
        self.buckets: dict[str, tuple[float, float]] = {}
        self.aliases: dict[str, str] = {}  # alias key -> customer key
        self.aliased_at: dict[str, float] = {}  # alias key -> when last named (wall clock)
        self.terminal = frozenset(terminal_states)
        # The console's counters: {(width, bucket start): {name: count}}.
        self.counters: dict[tuple[int, int], dict[str, int]] = {}
        self.conversations: dict[str, Conversation] = {}
        self.billed: dict[str, float] = {}  # outbound id counted billable -> when

    async def create_if_absent(self, records: Sequence[Record]) -> list[bool]:
        created = []
        for record in records:
            is_new = record.message_id not in self.records
            if is_new:
                self.records[record.message_id] = copy.deepcopy(record)
                self._count(created_counters(), record.created_at)
            created.append(is_new)
        return created

    def _count(self, names: Sequence[str], at: float) -> None:
        for width in (MINUTE, HOUR):
            bucket = self.counters.setdefault((width, bucket_of(at, width)), {})
            for name in names:
                bucket[name] = bucket.get(name, 0) + 1

    async def get(self, message_id: str) -> Record | None:
        await anyio.lowlevel.checkpoint()
        record = self.records.get(message_id)
        if record is None:
            return None
        found = copy.deepcopy(record)
        # The most advanced status about the reply: by its outbound id, or by the callback
        # data it echoed (the record's reply key, or its id from older replies).
        callbacks = (reply_key(message_id), message_id)
        known = [
            u
            for u in self.statuses.values()
            if u.outbound_message_id == record.outbound_message_id or u.callback_data in callbacks
        ]
        best = max(known, key=lambda u: u.rank, default=None)
        found.delivery_status = best.status if best else None
        found.delivery_errors = copy.deepcopy(best.errors) if best else []
        found.delivery_outbound_id = best.outbound_message_id if best else None
        return found

    async def save(self, record: Record, expected_version: int) -> bool:
        stored = self.records.get(record.message_id)
        if stored is None or stored.version != expected_version:
            return False
        self.records[record.message_id] = copy.deepcopy(record)
        self.saves.append(copy.deepcopy(record))
        self._count(transition_counters(record), record.updated_at)
        self._add(token_amounts(record), record.updated_at)
        return True

    def _add(self, amounts: Sequence[tuple[str, int]], at: float) -> None:
        bucket = self.counters.setdefault((DAY, bucket_of(at, DAY)), {})
        for name, n in amounts:
            bucket[name] = bucket.get(name, 0) + n

    async def count_billable(self, outbound_message_id: str, category: str, at: float) -> bool:
        if outbound_message_id in self.billed:
            return False
        self.billed[outbound_message_id] = at
        self._add([(billable_counter(category), 1)], at)
        return True

    async def record_status(self, update: StatusUpdate) -> bool:
        if update.rank == 0:
            return False
        known = self.statuses.get(update.outbound_message_id)
        if known is not None and known.rank >= update.rank:
            return False
        if known is not None and known.callback_data:  # the first callback data is kept
            update = dataclasses.replace(update, callback_data=known.callback_data)
        self.statuses[update.outbound_message_id] = copy.deepcopy(update)
        return True

    async def open_records(self, older_than: float) -> list[tuple[str, str]]:
        return [
            (r.message_id, r.state)
            for r in sorted(self.records.values(), key=lambda r: r.updated_at)
            if r.state not in self.terminal and r.updated_at < older_than
        ]

    async def failed_records(self, since: float | None, limit: int) -> list[str]:
        bound = float("-inf") if since is None else since
        found = sorted(self.records.values(), key=lambda r: r.updated_at)
        return [r.message_id for r in found if r.state == "failed" and r.updated_at >= bound][
            :limit
        ]

    async def purge(self, created_before: float) -> int:
        old = [r for r in self.records.values() if r.created_at < created_before]
        outbound = {r.outbound_message_id for r in old if r.outbound_message_id}
        callbacks = {key for r in old for key in (reply_key(r.message_id), r.message_id)}
        self.statuses = {
            name: u
            for name, u in self.statuses.items()
            if name not in outbound
            and u.callback_data not in callbacks
            and u.timestamp >= created_before
        }
        for conversation, turns in list(self.turns.items()):
            self.turns[conversation] = [t for t in turns if t.at >= created_before]
        self.buckets = {k: v for k, v in self.buckets.items() if v[1] >= created_before}
        self.billed = {k: at for k, at in self.billed.items() if at >= created_before}
        for alias in [a for a, at in self.aliased_at.items() if at < created_before]:
            self.aliases.pop(alias, None)
            del self.aliased_at[alias]
        now = time.time()
        for width, start in list(self.counters):
            if start < first_kept(width, now):
                del self.counters[(width, start)]
        for r in old:
            del self.records[r.message_id]
        return len(old)

    def _append_turns(
        self, conversation: str, turns: Sequence[Turn], window_seconds: float, keep: int
    ) -> None:
        kept = [*self.turns.get(conversation, []), *turns]
        newest = max(t.at for t in kept)
        self.turns[conversation] = [t for t in kept if t.at >= newest - window_seconds][-keep:]

    async def recent_turns(self, conversation: str, since: float, limit: int) -> list[Turn]:
        return [t for t in self.turns.get(conversation, []) if t.at >= since][-limit:]

    async def customer_of(self, key: str) -> str:
        return self._follow(key)

    def _follow(self, key: str) -> str:
        for _ in range(4):
            following = self.aliases.get(key)
            if following is None or following == key:
                break
            key = following
        return key

    def _move_turns(self, source: str, target: str) -> None:
        """The turns and the conversation of `source` become `target`'s, each unless
        `target` has its own."""
        if source in self.turns and not self.turns.get(target):
            self.turns[target] = self.turns.pop(source)
        if source in self.conversations and target not in self.conversations:
            self.conversations[target] = dataclasses.replace(
                self.conversations.pop(source), key=target
            )

    def _resolve_customer(self, phone_key: str | None, user_key: str | None) -> str:
        if not user_key:
            return self._follow(phone_key) if phone_key else ""
        customer = self._follow(user_key)
        if phone_key and phone_key != customer:
            self._move_turns(phone_key, customer)
            self._alias(phone_key, customer)
        return customer

    async def move_customer(self, previous_key: str, current_key: str) -> None:
        if previous_key == current_key:
            return
        if self._follow(current_key) == previous_key:
            self.aliases.pop(current_key, None)
            self.aliased_at.pop(current_key, None)
        self._move_turns(previous_key, current_key)
        self._alias(previous_key, current_key)

    def _alias(self, alias: str, customer: str) -> None:
        self.aliases[alias] = customer
        self.aliased_at[alias] = time.time()

    def _acquire(self, name: str, owner: str, seconds: float) -> bool:
        """Taken only when no one holds it (its owner included) or it has expired."""
        now = time.monotonic()
        if name in self.leases and self.lease_ends.get(name, now) > now:
            return False
        self.leases[name] = owner
        self.lease_ends[name] = now + seconds
        return True

    def _take_slot(self, key: str, now: float, per_seconds: float, burst: int) -> float:
        tokens, at = self.buckets.get(key, (float(burst), now))
        if now > at:
            tokens, at = min(float(burst), tokens + (now - at) / per_seconds), now
        if tokens < 1:
            self.buckets[key] = (tokens, at)
            return (1 - tokens) * per_seconds
        self.buckets[key] = (tokens - 1, at)
        return 0.0

    async def release_lease(self, name: str, owner: str) -> None:
        if self.leases.get(name) == owner:
            del self.leases[name]
            self.lease_ends.pop(name, None)

    async def lease_step(
        self,
        name: str,
        owner: str,
        seconds: float,
        message_id: str,
        turns: int = 0,
        records: int = 0,
    ) -> StepLoad:
        taken = self._acquire(name, owner, seconds)
        record = await self.get(message_id) if taken else None
        if record is None or not record.conversation:
            return StepLoad(taken, record)
        conversation = self.conversations.get(record.conversation)
        found = list(self.turns.get(record.conversation, [])[-turns:]) if turns > 0 else None
        listed = await self.conversation_records(record.conversation, records) if records else None
        return StepLoad(taken, record, found, conversation, listed)

    async def finish_step(self, commit: StepCommit) -> StepSave:
        record, expected_version = commit.record, commit.expected_version
        name, owner, next_lease = commit.lease.name, commit.lease.owner, commit.next_lease
        slot, turns, customer = commit.writes.slot, commit.writes.turns, commit.writes.customer
        chat = commit.writes.conversation
        stored = self.records.get(record.message_id)
        saved, wait, taken, key, mode_changed = False, 0.0, False, "", False
        if stored is not None and stored.version == expected_version:
            chat_key = chat.key if chat is not None else ""
            if chat is not None and not chat_key and customer is not None:
                chat_key = self._follow(customer.user_key or customer.phone_key or "")
            if (
                chat is not None
                and apply_write(self.conversations.get(chat_key), chat_key, chat) is None
            ):
                mode_changed = True
            elif slot is not None:
                wait = self._take_slot(slot.key, slot.now, slot.per_seconds, slot.burst)
            if wait <= 0 and not mode_changed:
                if customer is not None:
                    key = self._resolve_customer(customer.phone_key, customer.user_key)
                    record = dataclasses.replace(record, conversation=key)
                saved = await self.save(record, expected_version)
                if chat is not None:
                    await self.change_conversation(chat.key or key, chat)
        if turns is not None and turns.turns:
            self._append_turns(turns.conversation, turns.turns, turns.window_seconds, turns.keep)
        await self.release_lease(name, owner)
        if saved and next_lease is not None:
            taken = self._acquire(next_lease.name, next_lease.owner, next_lease.seconds)
        return StepSave(saved, wait, taken, key if saved else "", mode_changed)

    async def get_conversation(self, key: str) -> Conversation | None:
        return self.conversations.get(key)

    async def change_conversation(self, key: str, write: ConversationWrite) -> Conversation | None:
        changed = apply_write(self.conversations.get(key), key, write)
        if changed is not None:
            self.conversations[key] = changed
        return changed

    async def list_conversations(self, mode: str | None, limit: int) -> list[Conversation]:
        found = [c for c in self.conversations.values() if mode in (None, c.mode)]
        found.sort(key=lambda c: (c.since, c.key))
        return [dataclasses.replace(c, audit=()) for c in found[:limit]]

    async def conversation_records(self, key: str, limit: int) -> list[Record]:
        found = [r for r in self.records.values() if r.conversation == key]
        found.sort(key=lambda r: (r.created_at, r.message_id))
        kept = [await self.get(r.message_id) for r in found[-limit:]] if limit > 0 else []
        return [r for r in kept if r is not None]

    async def state_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for record in self.records.values():
            counts[record.state] = counts.get(record.state, 0) + 1
        return counts

    async def counter_buckets(self, width: int, since: float) -> list[tuple[int, dict[str, int]]]:
        first = first_read(width, since, time.time())  # ValueError for an unknown width
        return sorted(
            (start, dict(counts))
            for (w, start), counts in self.counters.items()
            if w == width and start >= first
        )

    async def list_records(self, query: RecordQuery) -> RecordPage:
        def matches(r: Record) -> bool:
            return (
                query.state in (None, r.state)
                and query.fallback_reason in (None, r.fallback_reason)
                and (query.since is None or r.updated_at >= query.since)
                and (query.until is None or r.updated_at < query.until)
                and (query.before is None or (r.updated_at, r.message_id) < query.before)
            )

        found = sorted(
            (r for r in self.records.values() if matches(r)),
            key=lambda r: (r.updated_at, r.message_id),
            reverse=True,
        )
        page = [copy.deepcopy(r) for r in found[: query.limit]]
        more = len(found) > query.limit and page
        return RecordPage(page, (page[-1].updated_at, page[-1].message_id) if more else None)

    async def ping(self) -> None:
        return None

    async def durability(self) -> str:
        return "none"  # in memory: nothing survives a crash

    async def close(self) -> None:
        return None

    def put(self, record: Record) -> None:
        """Store `record` as it is (test set-up, bypassing the version check)."""
        self.records[record.message_id] = copy.deepcopy(record)

    def stored(self, message_id: str) -> Record:
        """The stored copy of a record (test inspection)."""
        return copy.deepcopy(self.records[message_id])


class FakeQueue:
    """TaskQueue that keeps tasks in a list; tests pop and run them."""

    def __init__(self) -> None:
        self.tasks: list[Task] = []

    async def enqueue(self, task: Task) -> None:
        if task not in self.tasks:  # a waiting task is not queued twice, as in real queues
            self.tasks.append(task)

    async def ping(self) -> None:
        return None


class FakeOutbox:
    """Outbox that records request bodies; `fail_with` makes the next sends raise."""

    reconcile_seconds = 0.0

    def __init__(self) -> None:
        self.read: list[str] = []
        self.read_from: list[str] = []  # the business number of each read receipt
        self.sent: list[dict[str, Any]] = []
        self.sent_from: list[str] = []  # the business number of each send attempt
        self.known: dict[str, str] = {}
        self.lookups: list[str] = []
        self.fail_with: Exception | None = None
        self.on_send: list[Record | None] = []
        self.store: FakeStore | None = None

    async def send(self, body: dict[str, Any], phone_number_id: str = "") -> str:
        self.sent_from.append(phone_number_id)
        # The record replied to (the body names it only by its reply key).
        callback = str(body["context"]["message_id"])
        if self.store is not None:
            # What the store held at the moment the request left: proves the claim came first.
            self.on_send.append(copy.deepcopy(self.store.records.get(callback)))
        if self.fail_with is not None:
            raise self.fail_with
        outbound_id = f"wamid.OUT{len(self.sent) + 1:04d}"
        self.sent.append(copy.deepcopy(body))
        self.known[callback] = outbound_id
        return outbound_id

    async def find_sent(self, message_id: str) -> str | None:
        self.lookups.append(message_id)
        return self.known.get(message_id)

    async def mark_read(self, message_id: str, phone_number_id: str = "") -> None:
        self.read.append(message_id)
        self.read_from.append(phone_number_id)
