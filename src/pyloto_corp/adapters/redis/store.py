"""Redis store: shared state and atomic dedupe for many instances (redis.asyncio, hiredis).

Each operation is one round trip: a Lua script where several keys must change together
(create-if-absent of a whole batch, version-checked saves, monotonic statuses), so no
check-then-set race exists between instances; the scripts are scripts/*.lua (see scripts.py).
The scripts of a step's hot path (create, the step's lease and load, its save and end,
delivery statuses) go over one pipelined connection (wire.py), which costs a fraction of
redis-py's CPU per call; everything else uses the redis-py client.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection, Sequence
from types import TracebackType
from typing import Any, cast

import msgspec
import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from pyloto_corp.adapters.ops_buckets import first_read
from pyloto_corp.adapters.redis.keys import (
    ADOPTED_TTL_SECONDS,
    COUNTER_TTL_SECONDS,
    RECORD_TTL_GRACE_SECONDS,
    RedisKeys,
)
from pyloto_corp.adapters.redis.scripts import ALIAS_HOPS, BODIES
from pyloto_corp.adapters.redis.wire import RedisWire, Script
from pyloto_corp.application.durability import Persistence
from pyloto_corp.application.ports import (
    INSTANCES_LISTED,
    Adoption,
    InstanceBeat,
    RecordPage,
    RecordQuery,
    SlotRequest,
    StepCommit,
    StepLoad,
    StepSave,
    StoreNotDurable,
    StoreUnavailable,
)
from pyloto_corp.domain.conversation import AuditEntry, Conversation
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
from pyloto_corp.domain.records import DELIVERY_RANK, FAILED_STATE, Record, StatusUpdate, Turn
from pyloto_corp.domain.replies import reply_key
from pyloto_corp.domain.writes import ConversationWrite

EncodableT = bytes | str | int | float
# Records of the open index looked at per adoption call, so one call never blocks Redis long.
ADOPT_SLICE = 1000
# The most records one page of list_records returns, and the most index entries one page
# looks at (a page filtered by state and reason reads the reason's index and skips the
# records in other states): a page that stops there is shorter, with a cursor to go on.
MAX_PAGE = 500
PAGE_SCAN = 2000
# Counter names joined for a script: no name holds a space (domain.ops_metrics).
_CREATED_COUNTERS = " ".join(created_counters())

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Record)
_errors_decoder = msgspec.json.Decoder(list[dict[str, Any]])
_turn_encoder = msgspec.json.Encoder()
_turn_decoder = msgspec.json.Decoder(Turn)
_audit_encoder = msgspec.json.Encoder()
_audit_decoder = msgspec.json.Decoder(AuditEntry)

# The wire's form of each script (its body and SHA1), made once for every store.
WIRED: dict[str, Script] = {name: Script(body) for name, body in BODIES.items()}


class _RedisErrors:
    """Redis's errors as the port's, around every call of the store: a NOTDURABLE error
    reply (create.lua refused to write on a Redis without its append-only file) raises
    StoreNotDurable, any other RedisError (connection lost or refused, timeout, an error
    reply) StoreUnavailable; anything else passes through. A plain class rather than a
    generator-based contextmanager, as it wraps every call of the hot path: it keeps no state,
    so one instance serves every call, sync or async."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if error is None or not isinstance(error, RedisError):
            return
        if isinstance(error, ResponseError) and str(error).startswith("NOTDURABLE"):
            raise StoreNotDurable(f"redis: {error}") from error
        raise StoreUnavailable(f"redis: {error}") from error


_redis_errors = _RedisErrors()


def connect(url: str, timeout_seconds: float = 2.0) -> redis.Redis:
    """A pooled client with bounded timeouts and one quick retry on a dropped connection."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        # One retry when the connection is gone (a pooled connection to a restarted Redis),
        # never after a timeout: a write that timed out may have run, and running it again
        # would turn a created record into a "duplicate" or a saved step into "stale".
        retry=Retry(
            ExponentialBackoff(cap=0.5, base=0.05),
            retries=1,
            supported_errors=(RedisConnectionError,),
        ),
        health_check_interval=30,
        max_connections=64,
    )


def _bucket_ttl_ms(slot: SlotRequest) -> int:
    """The bucket is full again after burst * per_seconds: it may expire then."""
    return max(1000, int((slot.burst * slot.per_seconds + 1) * 1000))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _page_top(query: RecordQuery) -> tuple[str, tuple[float, str] | None]:
    """The highest score of a page, and the cursor whose ties it must skip (None when the
    `until` bound is below the cursor, which then excludes nothing more)."""
    if query.before is not None and (query.until is None or query.before[0] < query.until):
        return repr(float(query.before[0])), query.before
    if query.until is not None:
        return f"({float(query.until)!r}", None
    return "+inf", None


def _record(row: Sequence[Any]) -> Record:
    """A record from a load() row: {data, status, errors, outbound id, conversation}."""
    record = _decoder.decode(row[0])
    if not record.conversation and len(row) > 4 and row[4]:
        record.conversation = _text(row[4])
    record.delivery_status = row[1].decode() if row[1] else None
    record.delivery_errors = _errors_decoder.decode(row[2]) if row[2] else []
    record.delivery_outbound_id = row[3].decode() if row[1] and row[3] else None
    return record


def _listed(row: Sequence[Any], statuses: bool = False) -> list[Record]:
    """Records as include/chat_list.lua lists them (JSON, conversation, and with `statuses`
    the reply's delivery status; newest first), oldest first."""
    records = []
    width = 3 if statuses else 2
    for n in range(0, len(row) - width + 1, width):
        found = _decoder.decode(row[n])
        if not found.conversation and row[n + 1]:
            found.conversation = _text(row[n + 1])
        if statuses:
            found.delivery_status = _text(row[n + 2]) if row[n + 2] else None
        records.append(found)
    records.reverse()
    return records


def _chat_write(write: ConversationWrite) -> list[EncodableT]:
    """A conversation write as include/chat.lua reads it (scripts.CHAT_WRITE)."""
    audit = ""
    if write.audit is not None:
        who, action = write.audit
        audit = _audit_encoder.encode(AuditEntry(write.at, who, action)).decode()
    return [
        "" if write.customer_at is None else repr(float(write.customer_at)),
        write.message_id,
        write.expect_mode or "",
        write.mode or "",
        write.reason,
        write.owner,
        repr(float(write.at)),
        "1" if write.agent_activity else "",
        audit,
        write.expect_newest,
    ]


def _conversation(
    key: str, fields: Sequence[Any] | None, audit: Sequence[Any] = ()
) -> Conversation | None:
    """A conversation from its hash's fields (include/chat.lua's CHAT_FIELDS; None, or the
    first None, when there is none) and its audit trail."""
    if not fields or fields[0] is None:
        return None
    mode, since, reason, owner, customer_at, last, agent_at, version = (
        "" if value is None else _text(value) for value in fields
    )
    return Conversation(
        key,
        mode,
        float(since or 0),
        reason,
        owner,
        float(customer_at or 0),
        last,
        float(agent_at or 0),
        int(version or 0),
        tuple(_audit_decoder.decode(entry) for entry in audit),
    )


class RedisStore:
    """StateStore on Redis, safe for many instances at once."""

    def __init__(
        self,
        client: redis.Redis,
        terminal_states: Collection[str],
        retention_seconds: float,
        keys: RedisKeys | None = None,
        instance_id: str | None = None,
        states: Collection[str] = (),
        require_aof: bool = False,
    ) -> None:
        """`instance_id` names this process in the records it writes (see `adopt_orphans`).
        `states`: every state of the statechart (the terminal ones are added), which the
        console's counts per state read and purge clears a record that expired from.
        `require_aof`: creates fail with StoreNotDurable, writing nothing, while Redis has
        no append-only file (see scripts/create.lua)."""
        self.client = client
        self.require_aof = require_aof
        self.keys = keys or RedisKeys()
        self.instance_id = instance_id or uuid.uuid4().hex
        self.ttl = int(retention_seconds)
        # Purge deletes records at the retention; the TTL is the safety net (see RedisKeys).
        self.record_ttl = self.ttl + RECORD_TTL_GRACE_SECONDS
        self._terminal = frozenset(terminal_states)
        self._states = sorted(self._terminal | set(states))
        # Every script on redis-py (EVALSHA, and on NOSCRIPT its SCRIPT LOAD and EVALSHA
        # again); the hot path's also on the wire when the client's connection allows one
        # (TCP or TLS: EVALSHA, and on NOSCRIPT EVAL of its body), else on redis-py too.
        register = client.register_script
        self._create = register(BODIES["create"])
        self._save = register(BODIES["save"])
        self._get = register(BODIES["get"])
        self._status = register(BODIES["status"])
        self._billable = register(BODIES["billable"])
        self._purge = register(BODIES["purge"])
        self._release = register(BODIES["release"])
        self._lease_get = register(BODIES["lease_get"])
        self._finish = register(BODIES["finish"])
        self._adopt = register(BODIES["adopt"])
        self._beat = register(BODIES["beat"])
        self._page = register(BODIES["page"])
        self._move = register(BODIES["move"])
        self._change = register(BODIES["change"])
        self._chat_get = register(BODIES["chat_get"])
        self._chats = register(BODIES["chats"])
        self._chat_records = register(BODIES["chat_records"])
        self._wire = RedisWire.for_client(client)
        self._wire_create = WIRED["create"]
        self._wire_lease_get = WIRED["lease_get"]
        self._wire_finish = WIRED["finish"]
        self._wire_status = WIRED["status"]

    async def _hot(
        self, script: AsyncScript, wired: Script, keys: list[str], args: list[EncodableT]
    ) -> Any:
        """Run a hot-path script: on the wire, or on redis-py without one."""
        if self._wire is not None:
            return await self._wire.evalsha(wired, keys, args)
        return await script(keys=keys, args=args)

    async def create_if_absent(self, records: Sequence[Record]) -> list[bool]:
        if not records:
            return []
        keys = [self.keys.record(r.message_id) for r in records]
        keys += [self.keys.open_index, self.keys.created_index, self.keys.failed_index]
        keys += [self.keys.updated_index, self.keys.fallback_reasons]
        args: list[EncodableT] = [self.record_ttl, FAILED_STATE, self.instance_id]
        args += [self.keys.state_index(""), self.keys.fallback_index(""), _CREATED_COUNTERS]
        args += ["1" if self.require_aof else "", self.keys.chat_records("")]
        for r in records:
            args += [r.message_id, r.version, r.state, r.created_at, r.updated_at]
            args += [_encoder.encode(r), r.conversation, r.fallback_reason or ""]
            args += [
                self.keys.counters(MINUTE, bucket_of(r.created_at, MINUTE)),
                self.keys.counters(HOUR, bucket_of(r.created_at, HOUR)),
            ]
        with _redis_errors:
            result = await self._hot(self._create, self._wire_create, keys, args)
        return [bool(flag) for flag in result]

    async def get(self, message_id: str) -> Record | None:
        keys = [self.keys.record(message_id), self.keys.delivery_ref(reply_key(message_id))]
        with _redis_errors:
            row = await self._get(keys=keys, args=[self.keys.delivery("")])
        return None if row is None else _record(row)

    async def lease_step(
        self,
        name: str,
        owner: str,
        seconds: float,
        message_id: str,
        turns: int = 0,
        records: int = 0,
    ) -> StepLoad:
        keys = [
            self.keys.record(message_id),
            self.keys.delivery_ref(reply_key(message_id)),
            self.keys.lease(name),
        ]
        args: list[EncodableT] = [
            self.keys.delivery(""),
            owner,
            max(1, int(seconds * 1000)),
            max(0, turns),
            self.keys.conversation(""),
            self.keys.chat(""),
            max(0, records),
            self.keys.chat_records(""),
            self.keys.record(""),
        ]
        with _redis_errors:
            row = await self._hot(self._lease_get, self._wire_lease_get, keys, args)
        if not row[0] or len(row) == 1:
            return StepLoad(bool(row[0]))
        found = None if row[6] is None else [_turn_decoder.decode(entry) for entry in row[6]]
        record = _record(row[1:6])
        conversation = _conversation(record.conversation, row[7]) if record.conversation else None
        listed = None if len(row) < 9 or row[8] is None else _listed(row[8])
        return StepLoad(True, record, found, conversation, listed)

    async def save(self, record: Record, expected_version: int) -> bool:
        keys, args = self._save_call(record, expected_version)
        ops_keys, ops_args = self._ops_call(record)
        keys += ops_keys
        args += ops_args
        with _redis_errors:
            return bool(await self._save(keys=keys, args=args))

    async def finish_step(self, commit: StepCommit) -> StepSave:
        record, expected_version = commit.record, commit.expected_version
        name, owner, next_lease = commit.lease.name, commit.lease.owner, commit.next_lease
        slot, turns, customer = commit.writes.slot, commit.writes.turns, commit.writes.customer
        chat = commit.writes.conversation
        keys, args = self._save_call(record, expected_version)
        record_key = keys[0]
        keys += [
            self.keys.lease(name),
            self.keys.lease(next_lease.name) if next_lease else record_key,
            self.keys.pacing(slot.key) if slot else record_key,
            self.keys.conversation(turns.conversation) if turns else record_key,
        ]
        args.append(owner)
        if next_lease is not None:
            args += [next_lease.owner, max(1, int(next_lease.seconds * 1000))]
        else:
            args += ["", 0]
        if slot is not None:
            args += [repr(slot.now), repr(slot.per_seconds), slot.burst, _bucket_ttl_ms(slot)]
        else:
            args += ["", 0, 0, 0]
        if turns is not None and turns.turns:
            args += [max(1, int(turns.window_seconds)), turns.keep]
        else:
            args += [0, 0]
        ops_keys, ops_args = self._ops_call(record)
        keys += ops_keys
        args += ops_args
        if customer is not None:
            args += [customer.phone_key or "", customer.user_key or "", "1"]
        else:
            args += ["", "", ""]
        args += self._customer_args(None, None)[:3]
        keys.append(self.keys.chats)
        if chat is not None:
            args += ["1", chat.key, *_chat_write(chat)]
        else:
            args += ["", "", *_chat_write(ConversationWrite())]
        args += [self.keys.chat(""), self.keys.chat_audit(""), self.keys.chat_mode("")]
        if turns is not None and turns.turns:
            args += [_turn_encoder.encode(turn) for turn in turns.turns]
        with _redis_errors:
            saved, taken, wait, key, mode_changed = await self._hot(
                self._finish, self._wire_finish, keys, args
            )
        return StepSave(
            bool(saved), float(wait), bool(taken), _text(key) if saved else "", bool(mode_changed)
        )

    def _save_call(
        self, record: Record, expected_version: int
    ) -> tuple[list[str], list[EncodableT]]:
        keys = [self.keys.record(record.message_id), self.keys.open_index, self.keys.failed_index]
        args: list[EncodableT] = [
            expected_version,
            record.version,
            record.state,
            record.outbound_message_id or "",
            _encoder.encode(record),
            record.updated_at,
            1 if record.state in self._terminal else 0,
            record.message_id,
            1 if record.state == FAILED_STATE else 0,
            self.instance_id,
            record.conversation,
            record.created_at,
            self.keys.chat_records(""),
            self.record_ttl,
        ]
        return keys, args

    def _ops_call(self, record: Record) -> tuple[list[str], list[EncodableT]]:
        """The keys and arguments a save adds for the console (see
        scripts/include/save.lua)."""
        names = transition_counters(record)
        if names:
            at = record.updated_at
            minute = self.keys.counters(MINUTE, bucket_of(at, MINUTE))
            hour = self.keys.counters(HOUR, bucket_of(at, HOUR))
        else:  # no counter: any key will do
            minute = hour = self.keys.updated_index
        amounts = token_amounts(record)
        day = (
            self.keys.counters(DAY, bucket_of(record.updated_at, DAY))
            if amounts
            else self.keys.updated_index
        )
        keys = [self.keys.updated_index, minute, hour, self.keys.fallback_reasons, day]
        args: list[EncodableT] = [
            self.keys.state_index(""),
            self.keys.fallback_index(""),
            record.fallback_reason or "",
            " ".join(names),
            " ".join(f"{name} {n}" for name, n in amounts),
        ]
        return keys, args

    async def record_status(self, update: StatusUpdate) -> bool:
        rank = DELIVERY_RANK.get(update.status)
        if rank is None:
            return False
        delivery = self.keys.delivery(update.outbound_message_id)
        ref = self.keys.delivery_ref(update.callback_data) if update.callback_data else delivery
        args: list[EncodableT] = [
            update.status,
            rank,
            update.timestamp,
            _encoder.encode(update.errors),
            update.callback_data or "",
            self.ttl,
            update.outbound_message_id,
        ]
        with _redis_errors:
            return bool(await self._hot(self._status, self._wire_status, [delivery, ref], args))

    async def count_billable(self, outbound_message_id: str, category: str, at: float) -> bool:
        keys = [
            self.keys.billed(outbound_message_id),
            self.keys.counters(DAY, bucket_of(at, DAY)),
        ]
        args: list[EncodableT] = [billable_counter(category), self.ttl, COUNTER_TTL_SECONDS[DAY]]
        with _redis_errors:
            return bool(await self._billable(keys=keys, args=args))

    async def open_records(self, older_than: float) -> list[tuple[str, str]]:
        with _redis_errors:
            ids = cast(
                list[bytes],
                await self.client.zrangebyscore(self.keys.open_index, "-inf", f"({older_than}"),
            )
            found = await self._states_in(self.keys.open_index, ids)
        return [(message_id, state) for message_id, state in found if state not in self._terminal]

    async def failed_records(self, since: float | None, limit: int) -> list[str]:
        low = "-inf" if since is None else repr(since)
        index = self.keys.failed_index
        with _redis_errors:
            ids = cast(
                list[bytes],
                await self.client.zrangebyscore(index, low, "+inf", start=0, num=limit),
            )
            found = await self._states_in(index, ids)
        return [message_id for message_id, state in found if state == FAILED_STATE]

    async def _states_in(self, index: str, ids: list[bytes]) -> list[tuple[str, str]]:
        """(message id, state) of the records `ids` of `index` names, in one pipelined read;
        the ids of records expired by their TTL are dropped from the index."""
        if not ids:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for raw in ids:
                pipe.hget(self.keys.record(raw.decode()), "s")
            states = await pipe.execute()
        gone = [raw for raw, state in zip(ids, states, strict=True) if state is None]
        if gone:
            await self.client.zrem(index, *gone)
        return [
            (raw.decode(), state.decode())
            for raw, state in zip(ids, states, strict=True)
            if state is not None
        ]

    async def purge(self, created_before: float) -> int:
        keys = [self.keys.open_index, self.keys.created_index, self.keys.failed_index]
        keys += [self.keys.updated_index, self.keys.fallback_reasons]
        prefixes: list[EncodableT] = [
            self.keys.record(""),
            self.keys.delivery(""),
            self.keys.delivery_ref(""),
            self.keys.state_index(""),
            self.keys.fallback_index(""),
            self.keys.chat_records(""),
            len(self._states),
            *self._states,
        ]
        total = 0
        with _redis_errors:
            while True:  # in slices of 500, so one call never blocks Redis for long
                found = await self.client.zrangebyscore(
                    self.keys.created_index, "-inf", f"({created_before!r}", start=0, num=500
                )
                ids = [item.decode() if isinstance(item, bytes) else str(item) for item in found]
                if not ids:
                    return total
                # Statuses name their record by its reply key (older replies by its id):
                # the key is computed here, as Lua has no HMAC.
                pairs = [
                    value for message_id in ids for value in (message_id, reply_key(message_id))
                ]
                total += int(await self._purge(keys=keys, args=[*prefixes, *pairs]))
                if len(ids) < 500:
                    return total

    async def state_counts(self) -> dict[str, int]:
        with _redis_errors:
            async with self.client.pipeline(transaction=False) as pipe:
                for state in self._states:
                    pipe.zcard(self.keys.state_index(state))
                counts = await pipe.execute()
        return {state: int(n) for state, n in zip(self._states, counts, strict=True) if n}

    async def counter_buckets(self, width: int, since: float) -> list[tuple[int, dict[str, int]]]:
        now = time.time()
        # One bucket past now's: an instance whose clock runs a little ahead writes there.
        starts = range(first_read(width, since, now), bucket_of(now, width) + 2 * width, width)
        if not starts:
            return []
        with _redis_errors:
            async with self.client.pipeline(transaction=False) as pipe:
                for start in starts:
                    pipe.hgetall(self.keys.counters(width, start))
                found: list[dict[bytes, bytes]] = await pipe.execute()
        return [
            (start, {name.decode(): int(n) for name, n in counters.items()})
            for start, counters in zip(starts, found, strict=True)
            if counters
        ]

    async def list_records(self, query: RecordQuery) -> RecordPage:
        limit = min(query.limit, MAX_PAGE)
        if limit <= 0:
            return RecordPage([], None)
        index, only_state = self._page_index(query)
        high, cursor = _page_top(query)
        args: list[EncodableT] = [
            high,
            "-inf" if query.since is None else repr(float(query.since)),
            "" if cursor is None else repr(float(cursor[0])),
            "" if cursor is None else cursor[1],
            limit + 1,  # one more: whether a next page exists
            self.keys.record(""),
            only_state,
            max(PAGE_SCAN, limit + 1),
        ]
        with _redis_errors:
            row = await self._page(keys=[index], args=args)
        found = row[3:]
        records = [_decoder.decode(data) for data in found[0 : 3 * limit : 3]]
        if len(found) > 3 * limit:  # the last record shown is the cursor
            last = found[3 * limit - 2 : 3 * limit]
        elif not row[0] and row[2]:  # stopped at PAGE_SCAN: go on after the last entry seen
            last = row[1:3]
        else:
            return RecordPage(records, None)
        return RecordPage(records, (float(last[0]), _text(last[1])))

    def _page_index(self, query: RecordQuery) -> tuple[str, str]:
        """The index a page reads, and the state its records must be in ('' for any): a
        reason's index is read for a reason and a state, as it holds fewer records."""
        if query.fallback_reason is not None:
            return self.keys.fallback_index(query.fallback_reason), query.state or ""
        if query.state is not None:
            return self.keys.state_index(query.state), ""
        return self.keys.updated_index, ""

    async def recent_turns(self, conversation: str, since: float, limit: int) -> list[Turn]:
        with _redis_errors:
            entries = await self.client.lrange(self.keys.conversation(conversation), -limit, -1)
        turns = [_turn_decoder.decode(entry) for entry in entries]
        return [turn for turn in turns if turn.at >= since]

    async def get_conversation(self, key: str) -> Conversation | None:
        keys = [self.keys.chat(key), self.keys.chat_audit(key)]
        with _redis_errors:
            fields, audit = await self._chat_get(keys=keys, args=[])
        return _conversation(key, fields, audit)

    async def change_conversation(self, key: str, write: ConversationWrite) -> Conversation | None:
        args: list[EncodableT] = [
            self.keys.chat(""),
            self.keys.chat_audit(""),
            self.keys.chat_mode(""),
            self.record_ttl,
            key,
            *_chat_write(write),
        ]
        with _redis_errors:
            row = await self._change(keys=[self.keys.chats], args=args)
        if not row[0]:
            return None
        return _conversation(key, row[1], row[2])

    async def list_conversations(self, mode: str | None, limit: int) -> list[Conversation]:
        if limit <= 0:
            return []
        index = self.keys.chats if mode is None else self.keys.chat_mode(mode)
        with _redis_errors:
            row = await self._chats(keys=[index], args=[self.keys.chat(""), limit, mode or ""])
        width = 9  # the key, then include/chat.lua's CHAT_FIELDS
        found = (
            _conversation(_text(row[i]), row[i + 1 : i + width]) for i in range(0, len(row), width)
        )
        return [conversation for conversation in found if conversation is not None]

    async def conversation_records(self, key: str, limit: int) -> list[Record]:
        if limit <= 0:
            return []
        with _redis_errors:
            row = await self._chat_records(
                keys=[self.keys.chat_records(key)],
                args=[self.keys.record(""), limit, self.keys.delivery("")],
            )
        return _listed(row, statuses=True)

    async def customer_of(self, key: str) -> str:
        with _redis_errors:
            for _ in range(ALIAS_HOPS):  # as include/customer.lua's follow()
                following = await self.client.get(self.keys.alias(key))
                if following is None or _text(following) == key:
                    break
                key = _text(following)
        return key

    def _customer_args(self, first: str | None, second: str | None) -> list[EncodableT]:
        prefixes = [self.keys.conversation(""), self.keys.alias("")]
        return [*prefixes, self.ttl, first or "", second or ""]

    async def move_customer(self, previous_key: str, current_key: str) -> None:
        with _redis_errors:
            chats = [
                self.keys.chat(""),
                self.keys.chat_audit(""),
                self.keys.chat_mode(""),
                self.keys.chats,
            ]
            args = [*self._customer_args(previous_key, current_key), *chats]
            await self._move(keys=[], args=args)

    async def release_lease(self, name: str, owner: str) -> None:
        with _redis_errors:
            await self._release(keys=[self.keys.lease(name)], args=[owner])

    async def adopt_orphans(self, now: float, dead_after_seconds: float) -> Adoption:
        """Beat for this instance, and take over the open records of instances that have not
        beaten for `dead_after_seconds`: (message id, state) of each record adopted.

        The open index is read in slices; records it skips while it shifts (others finish
        meanwhile) are found by the next call, as a dead instance is forgotten only after a
        pass that found nothing of it.
        """
        with _redis_errors:
            server = await self.client.info("server")
            before = await self._beat(keys=[self.keys.instances], args=[self.instance_id, now])
            adopted = await self._adopt_slices(now, now - dead_after_seconds)
        return Adoption(adopted, float(before) if before else None, str(server.get("run_id")))

    async def _adopt_slices(self, now: float, dead_before: float) -> list[tuple[str, str]]:
        keys = [self.keys.instances, self.keys.open_index, self.keys.instances_adopted]
        adopted: list[tuple[str, str]] = []
        offset = 0
        while True:
            args: list[EncodableT] = [
                self.instance_id,
                dead_before,
                self.keys.record(""),
                offset,
                ADOPT_SLICE,
                self.keys.lease(""),
                now,
                ADOPTED_TTL_SECONDS,
            ]
            row = await self._adopt(keys=keys, args=args)
            seen = int(row[0])
            if seen < 0:
                return adopted  # no instance is dead
            values = [v.decode() if isinstance(v, bytes) else str(v) for v in row[1:]]
            adopted += zip(values[::2], values[1::2], strict=True)
            offset += seen
            if seen < ADOPT_SLICE:
                break
        if not adopted:
            await self.client.zremrangebyscore(self.keys.instances, "-inf", f"({dead_before!r}")
        return adopted

    async def retire(self) -> None:
        """Mark this instance dead at once (a graceful stop): the records it still owns are
        adopted at the next beat of a live instance instead of after the heartbeat timeout."""
        with _redis_errors:
            await self.client.zadd(self.keys.instances, {self.instance_id: 0})

    async def instances(self) -> list[InstanceBeat]:
        """The instances by their last beat, latest first (at most INSTANCES_LISTED), with
        the tally of what each adopted: two reads, neither of any record."""
        with _redis_errors:
            beats = cast(
                "list[tuple[bytes, float]]",
                await self.client.zrevrange(
                    self.keys.instances, 0, INSTANCES_LISTED - 1, withscores=True
                ),
            )
            tally = await self.client.hgetall(self.keys.instances_adopted)
        counts = {_text(k): _text(v) for k, v in tally.items()}
        known: dict[str, float | None] = {_text(m): float(score) for m, score in beats}
        for field in counts:  # instances forgotten since, whose adoptions still count
            if not field.endswith(":at") and len(known) < INSTANCES_LISTED:
                known.setdefault(field, None)
        found = []
        for instance_id, beat_at in known.items():
            at = counts.get(f"{instance_id}:at")
            found.append(
                InstanceBeat(
                    instance_id=instance_id,
                    beat_at=beat_at,
                    adopted=int(counts.get(instance_id, "0")),
                    adopted_at=float(at) if at else None,
                    this=instance_id == self.instance_id,
                )
            )
        return found

    async def durability(self) -> str:
        """Redis's persistence: `aof`, `rdb`, `aof+rdb`, `none`, or `unknown` when CONFIG is
        refused (managed Redis such as Memorystore) and AOF is off."""
        return (await self.persistence()).mode

    async def persistence(self) -> Persistence:
        """AOF on or off (INFO), its fsync policy and RDB's snapshots (CONFIG GET: None for
        both when CONFIG is refused, as Memorystore does)."""
        with _redis_errors:
            aof = str((await self.client.info("persistence")).get("aof_enabled")) == "1"
            try:
                # One pattern per call: Redis before 7.0 takes no more.
                fsync = await self.client.config_get("appendfsync")
                save = await self.client.config_get("save")
            except ResponseError:
                return Persistence(aof, None, None)
        policy = str(fsync.get("appendfsync") or "") or None
        return Persistence(aof, policy, bool(str(save.get("save") or "").strip()))

    async def ping(self) -> None:
        with _redis_errors:
            await self.client.ping()

    async def close(self) -> None:
        if self._wire is not None:
            await self._wire.aclose()
        await self.client.aclose()
