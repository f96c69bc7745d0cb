"""Redis-specific behaviour of the Redis adapters, against a real private redis-server.

The StateStore contract (test_store_contract.py) already runs on Redis; these tests cover what
only Redis has: round trips per call, many clients (instances) at once, key names and
lifetimes, the sweeper's sorted-set index, faults and reconnection, and the Redis dry-run
outbox. Tests isolate themselves by key prefix on the session's server; a test that stops the
server, freezes it, or reads its whole keyspace uses a server of its own (`private_redis`).

Round trips are counted with MONITOR from a separate connection: it lists every command a
client sends, and marks those a Lua script runs inside EVALSHA as `lua`, so they are left out
(INFO's total_commands_processed counts the script's inner commands too).
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import anyio
import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from pyloto_corp.adapters import dry_run_outbox
from pyloto_corp.adapters.dry_run_outbox import RedisDryRunOutbox
from pyloto_corp.adapters.redis import (
    DEDUPE_WINDOW_SECONDS,
    RECORD_TTL_GRACE_SECONDS,
    RedisKeys,
    RedisStore,
    connect,
)
from pyloto_corp.adapters.redis import store as redis_store
from pyloto_corp.adapters.whatsapp_webhook import parse_webhook
from pyloto_corp.application.ingest import sign, verify_signature
from pyloto_corp.application.ports import (
    CustomerRequest,
    InstanceRegistry,
    LeaseHold,
    RecordQuery,
    SlotRequest,
    StateStore,
    StepCommit,
    StoreUnavailable,
    Task,
    TransientStepError,
    TurnsWrite,
    Writes,
)
from pyloto_corp.bootstrap import bootstrap
from pyloto_corp.config import Settings
from pyloto_corp.domain.records import StatusUpdate, Turn
from pyloto_corp.domain.replies import reply_key, text_reply_body
from pyloto_corp.domain.results import Results
from pyloto_corp.domain.writes import ConversationWrite
from tests.integration.conftest import RETENTION_SECONDS, all_states, terminal_states
from tests.integration.factories import UNICODE_TEXT, record
from tests.support.helpers import APP_SECRET, encode, envelope, eventually, new_wamid, text_message
from tests.support.records import inbound
from tests.support.redis_server import RedisServer
from tests.unit.fakes import FakeQueue

pytestmark = pytest.mark.anyio

TERMINAL = terminal_states()
WAMID = re.compile(r"^wamid\.[A-Za-z0-9._-]+$")
# Allowance for the seconds between writing a key and reading its TTL.
TTL_SLACK = 30


def open_store(
    url: str, prefix: str, timeout_seconds: float = 2.0, retention: float = RETENTION_SECONDS
) -> RedisStore:
    """A RedisStore with its own connection pool, as one instance of the service has."""
    return RedisStore(
        connect(url, timeout_seconds), TERMINAL, retention, RedisKeys(prefix), states=all_states()
    )


@pytest.fixture
async def rstore(redis_server: RedisServer, redis_prefix: str) -> AsyncIterator[RedisStore]:
    """A RedisStore on the session's server, under this test's prefix."""
    opened = open_store(redis_server.url, redis_prefix)
    yield opened
    await opened.close()


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A plain client of the session's server for checks (keys, TTLs, index scores)."""
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@asynccontextmanager
async def client_commands(url: str) -> AsyncIterator[list[str]]:
    """Names of the commands clients send to the server inside the block, in order.

    Read with MONITOR on a connection of its own; commands run by Lua scripts are left out,
    and so is everything from the connection that sends the end marker. The list is filled
    when the block exits.
    """
    watcher = aioredis.Redis.from_url(url)
    seen: list[str] = []
    try:
        async with watcher.monitor() as monitor:
            yield seen
            marker = f"end-of-measure-{uuid.uuid4().hex}"
            await watcher.echo(marker)  # a second connection of the watcher's pool
            entries: list[tuple[str, str]] = []
            with anyio.fail_after(10):
                while True:
                    entry = await monitor.next_command()
                    if marker in entry["command"]:
                        marker_port = entry["client_port"]
                        break
                    if entry["client_type"] != "lua":
                        name = entry["command"].split(" ", 1)[0].upper()
                        entries.append((entry["client_port"], name))
            seen.extend(name for port, name in entries if port != marker_port)
    finally:
        await watcher.aclose()


def evalsha_calls(client: redis.Redis) -> int:
    """How many EVALSHA the server ran so far (INFO commandstats)."""
    stats = client.info("commandstats").get("cmdstat_evalsha", {"calls": 0})
    return int(stats["calls"])


def signed_body(*texts: str) -> tuple[bytes, list[str]]:
    """A webhook body (its signature checked) with one text message per text, and their ids."""
    messages = [text_message(text) for text in texts]
    body = encode(envelope(messages))
    verify_signature(body, sign(body, APP_SECRET), APP_SECRET)
    return body, [str(m["id"]) for m in messages]


def reply(callback: str, text: str = UNICODE_TEXT) -> dict[str, Any]:
    """A Graph API text reply to the inbound message `callback` (its reply key as callback)."""
    return text_reply_body(inbound(callback, text="oi"), text)


async def keys_under(client: aioredis.Redis, prefix: str) -> set[str]:
    """Every key of `prefix` (SCAN restricted to the prefix)."""
    return {key.decode() async for key in client.scan_iter(match=f"{prefix}:*", count=1000)}


# --- one round trip per call --------------------------------------------------------------


async def test_create_if_absent_is_one_command_for_one_record_and_for_fifty(
    private_redis: RedisServer, redis_prefix: str
) -> None:
    """Once the script is loaded, create_if_absent of 1 record and of a batch of 50 records
    (new or all duplicates) each reach Redis as exactly one command, an EVALSHA."""
    store = open_store(private_redis.url, redis_prefix)
    batch = [record() for _ in range(50)]
    stats = private_redis.client()
    try:
        assert await store.create_if_absent([record()]) == [True]  # warm-up: script, connection
        await store.ping()  # and the redis-py client's connection, which the probe uses
        async with client_commands(private_redis.url) as probe:  # the measure sees commands
            await store.client.set(f"{redis_prefix}:probe", 1)
            await store.client.get(f"{redis_prefix}:probe")
        async with client_commands(private_redis.url) as single:
            assert await store.create_if_absent([record()]) == [True]
        evalsha_before = evalsha_calls(stats)
        async with client_commands(private_redis.url) as fifty:
            assert await store.create_if_absent(batch) == [True] * 50
        evalsha_after = evalsha_calls(stats)
        async with client_commands(private_redis.url) as duplicates:
            assert await store.create_if_absent(batch) == [False] * 50
    finally:
        stats.close()
        await store.close()

    assert probe == ["SET", "GET"]
    assert single == ["EVALSHA"]
    assert fifty == ["EVALSHA"]
    assert evalsha_after - evalsha_before == 1  # INFO commandstats agrees
    assert duplicates == ["EVALSHA"]


async def test_step_store_calls_are_one_command_each(
    private_redis: RedisServer, redis_prefix: str
) -> None:
    """get, a version-checked save, a status update, a lease's acquire and release: one
    command each (what a step costs besides its own work)."""
    store = open_store(private_redis.url, redis_prefix)
    original = record()
    try:
        await store.create_if_absent([original])
        await store.get(original.message_id)  # warm-up: every script loaded once
        await store.save(replace(original, version=1), expected_version=0)
        await store.record_status(StatusUpdate("wamid.OUT.W", "sent", 1, original.message_id))
        await store.lease_step("warm", "me", 5, original.message_id)
        await store.release_lease("warm", "me")
        measured: dict[str, list[str]] = {}
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "get": lambda: store.get(original.message_id),
            "save": lambda: store.save(replace(original, version=2), expected_version=1),
            "record_status": lambda: store.record_status(
                StatusUpdate(
                    "wamid.OUT.1", "delivered", 2, callback_data=reply_key(original.message_id)
                )
            ),
            "lease_step": lambda: store.lease_step("step", "me", 5, original.message_id),
            "release_lease": lambda: store.release_lease("step", "me"),
        }
        for name, call in calls.items():
            async with client_commands(private_redis.url) as commands:
                await call()
            measured[name] = commands
    finally:
        await store.close()

    assert measured == {
        "get": ["EVALSHA"],
        "save": ["EVALSHA"],
        "record_status": ["EVALSHA"],
        "lease_step": ["EVALSHA"],
        "release_lease": ["EVALSHA"],
    }


async def test_ingesting_a_one_message_webhook_is_one_store_round_trip(
    private_redis: RedisServer, redis_prefix: str, make_settings: Callable[..., Settings]
) -> None:
    """The Ingestor wired by bootstrap on STATE_BACKEND=redis stores a signed one-message
    webhook with one EVALSHA; its first task goes to the in-process queue at no Redis cost."""
    settings = make_settings(
        STATE_BACKEND="redis", REDIS_URL=private_redis.url, REDIS_KEY_PREFIX=redis_prefix
    )
    container = bootstrap(settings)
    queued: list[Task] = []

    async def note(task: Task, attempt: int) -> None:
        queued.append(task)

    container.queue.start(note)  # workers only note the tasks: no step runs
    try:
        warm_up, _ = signed_body("Bom dia")
        await container.ingestor.ingest(parse_webhook(warm_up))
        body, (message_id,) = signed_body("Vocês entregam em Campinas?")
        async with client_commands(private_redis.url) as commands:
            result = await container.ingestor.ingest(parse_webhook(body))
        await eventually(lambda: len(queued) == 2)
        stored = await container.store.get(message_id)
    finally:
        await container.stop()

    assert commands == ["EVALSHA"]
    assert (result.created, result.duplicates) == (1, 0)
    assert stored is not None
    assert stored.state == "received"
    assert queued[-1] == container.advancer.task_for(stored)


# --- many clients at once -----------------------------------------------------------------


async def test_each_transition_is_two_store_round_trips(
    private_redis: RedisServer, redis_prefix: str, make_settings: Callable[..., Settings]
) -> None:
    """A step on Redis is one EVALSHA to take its lease and load the record and one to save
    the transition and give the lease back (the template path: received → deduped →
    fallback → queued_outbound, each step run through the Advancer as the queue runs it)."""
    settings = make_settings(
        STATE_BACKEND="redis", REDIS_URL=private_redis.url, REDIS_KEY_PREFIX=redis_prefix
    )
    container = bootstrap(settings, queue=FakeQueue())
    body, (message_id,) = signed_body("Vocês abrem no sábado?")
    per_step: dict[str, list[str]] = {}
    try:
        await container.ingestor.ingest(parse_webhook(body))
        await container.advancer.advance(message_id, "received")  # warm: scripts loaded
        for state in ("deduped", "fallback"):
            async with client_commands(private_redis.url) as commands:
                await container.advancer.advance(message_id, state)
            per_step[state] = commands
        record = await container.store.get(message_id)
    finally:
        await container.stop()

    assert per_step == {"deduped": ["EVALSHA", "EVALSHA"], "fallback": ["EVALSHA", "EVALSHA"]}
    assert record is not None
    assert record.state == "queued_outbound"


@pytest.fixture
async def five_instances(
    redis_server: RedisServer, redis_prefix: str
) -> AsyncIterator[list[RedisStore]]:
    """Five stores on one server and prefix, each with its own connection pool."""
    stores = [open_store(redis_server.url, redis_prefix) for _ in range(5)]
    assert len({id(s.client.connection_pool) for s in stores}) == 5
    yield stores
    for store in stores:
        await store.close()


async def test_fifty_creates_of_one_id_from_five_clients_create_it_once(
    five_instances: list[RedisStore],
) -> None:
    """50 simultaneous create_if_absent of one id spread over 5 clients: exactly one True,
    and every client reads the winner's record."""
    message_id = new_wamid()
    candidates = [record(message_id, text=f"cópia {n}") for n in range(50)]

    results = await asyncio.gather(
        *(five_instances[n % 5].create_if_absent([c]) for n, c in enumerate(candidates))
    )

    flat = [created for result in results for created in result]
    assert flat.count(True) == 1
    winner = candidates[flat.index(True)]
    for store in five_instances:
        assert await store.get(message_id) == winner


async def test_overlapping_batches_from_five_clients_create_each_id_once(
    five_instances: list[RedisStore], raw: aioredis.Redis
) -> None:
    """Five clients creating the same 20 ids at once, each batch in another order: every id
    is created by exactly one client, and each index holds each id once."""
    ids = [new_wamid() for _ in range(20)]
    orders = [ids[n:] + ids[:n] for n in range(0, 20, 4)]

    results = await asyncio.gather(
        *(
            store.create_if_absent([record(i, text=f"cliente {n}") for i in order])
            for n, (store, order) in enumerate(zip(five_instances, orders, strict=True))
        )
    )

    winners = {i: [n for n, order in enumerate(orders) if results[n][order.index(i)]] for i in ids}
    assert all(len(by) == 1 for by in winners.values()), winners
    for message_id, (n,) in winners.items():
        stored = await five_instances[0].get(message_id)
        assert stored is not None
        assert stored.inbound.text == f"cliente {n}"
    keys = five_instances[0].keys
    assert await raw.zcard(keys.open_index) == 20
    assert await raw.zcard(keys.created_index) == 20


async def test_twenty_saves_from_one_version_from_five_clients_one_wins(
    five_instances: list[RedisStore], raw: aioredis.Redis
) -> None:
    """20 simultaneous saves expecting the same version, over 5 clients: exactly one True;
    the stored record and its sweeper-index score are the winner's."""
    original = record(created_at=1_000.0)
    assert await five_instances[0].create_if_absent([original]) == [True]
    candidates = [
        replace(
            original,
            state="deduped",
            version=1,
            updated_at=2_000.0 + n,
            results=Results(summary=str(n)),
        )
        for n in range(20)
    ]

    outcomes = await asyncio.gather(
        *(five_instances[n % 5].save(c, expected_version=0) for n, c in enumerate(candidates))
    )

    assert outcomes.count(True) == 1
    winner = candidates[outcomes.index(True)]
    for store in five_instances:
        assert await store.get(original.message_id) == winner
    score = await raw.zscore(five_instances[0].keys.open_index, original.message_id)
    assert score == winner.updated_at


# --- keys and lifetimes -------------------------------------------------------------------


async def test_record_key_lives_for_the_retention_and_saves_keep_its_ttl(
    rstore: RedisStore, raw: aioredis.Redis
) -> None:
    """A created record's key expires a grace day after the configured retention (purge
    deletes it at the retention; at least the 7-day dedupe window, never -1), and a later
    save keeps that expiry."""
    original = record()
    await rstore.create_if_absent([original])
    key = rstore.keys.record(original.message_id)

    created_ttl = await raw.ttl(key)
    lifetime = RETENTION_SECONDS + RECORD_TTL_GRACE_SECONDS
    assert lifetime - TTL_SLACK <= created_ttl <= lifetime
    assert created_ttl >= DEDUPE_WINDOW_SECONDS - TTL_SLACK

    assert await rstore.save(replace(original, state="deduped", version=1), expected_version=0)
    saved_ttl = await raw.ttl(key)
    assert 0 < saved_ttl <= created_ttl


async def test_retention_comes_from_the_store_setting(
    redis_server: RedisServer, redis_prefix: str, raw: aioredis.Redis
) -> None:
    """Another retention given to the store is the TTL its record keys get (with the grace
    day after it)."""
    store = open_store(redis_server.url, redis_prefix, retention=10 * 86400.0)
    try:
        original = record()
        await store.create_if_absent([original])
        ttl = await raw.ttl(store.keys.record(original.message_id))
    finally:
        await store.close()
    assert 11 * 86400 - TTL_SLACK <= ttl <= 11 * 86400


async def test_delivery_and_delivery_ref_keys_get_the_retention_ttl(
    rstore: RedisStore, raw: aioredis.Redis
) -> None:
    """A status with callback data writes the delivery hash and the ref (callback -> outbound
    id), both expiring after the retention; a status without callback data writes no ref."""
    message_id = new_wamid()
    assert await rstore.record_status(StatusUpdate("wamid.OUT.A", "sent", 1, message_id))
    assert await rstore.record_status(StatusUpdate("wamid.OUT.B", "delivered", 2))

    keys = rstore.keys
    assert await raw.get(keys.delivery_ref(message_id)) == b"wamid.OUT.A"
    for key in (keys.delivery("wamid.OUT.A"), keys.delivery_ref(message_id)):
        assert RETENTION_SECONDS - TTL_SLACK <= await raw.ttl(key) <= RETENTION_SECONDS, key
    assert await raw.ttl(keys.delivery("wamid.OUT.B")) >= RETENTION_SECONDS - TTL_SLACK
    assert await keys_under(raw, f"{keys.prefix}:dref") == {keys.delivery_ref(message_id)}


async def test_lease_key_expires_within_the_lease_and_belongs_to_its_owner(
    rstore: RedisStore, raw: aioredis.Redis
) -> None:
    """A lease is a key holding its owner with a millisecond TTL no longer than the lease;
    others cannot take it or release it; it frees itself when it expires."""
    key = rstore.keys.lease("wamid.X:received")
    assert (await rstore.lease_step("wamid.X:received", "owner-a", 1.5, "wamid.X")).taken

    assert 0 < await raw.pttl(key) <= 1500
    assert await raw.get(key) == b"owner-a"
    assert not (await rstore.lease_step("wamid.X:received", "owner-b", 1.5, "wamid.X")).taken
    await rstore.release_lease("wamid.X:received", "owner-b")
    assert await raw.get(key) == b"owner-a"
    await rstore.release_lease("wamid.X:received", "owner-a")
    assert await raw.exists(key) == 0

    assert (await rstore.lease_step("short", "owner-a", 0.05, "wamid.X")).taken
    await anyio.sleep(0.1)  # at least the lease's length
    assert (await rstore.lease_step("short", "owner-b", 1, "wamid.X")).taken


async def test_every_key_has_the_prefix_and_only_indexes_live_forever(
    private_redis: RedisServer, redis_prefix: str
) -> None:
    """Every kind of key the store and the dry-run outbox write starts with the prefix (the
    whole keyspace of a private server is read), and all but the indexes expire."""
    store = open_store(private_redis.url, redis_prefix)
    outbox = RedisDryRunOutbox(store.client, store.keys, RETENTION_SECONDS)
    check = private_redis.client()
    try:
        original = record()
        await store.create_if_absent([original])
        await store.save(replace(original, state="sent", version=1, outbound_message_id="o1"), 0)
        fell_back = replace(record(), fallback_reason="timeout")
        await store.create_if_absent([fell_back])
        await store.create_if_absent([record()])
        await store.record_status(StatusUpdate("o1", "delivered", 5, original.message_id))
        turns = TurnsWrite("conv-1", [Turn("customer", "oi", time.time())], 3600, 10)
        await store.finish_step(
            StepCommit(original, 9, LeaseHold("l-t", "me"), writes=Writes(turns=turns))
        )
        assert (await store.lease_step("lease-1", "me", 30, original.message_id)).taken
        await outbox.send(reply(original.message_id))

        found = {key.decode(): check.ttl(key) for key in check.scan_iter(count=1000)}
    finally:
        check.close()
        await store.close()

    assert found, "nothing was written"
    assert all(key.startswith(f"{redis_prefix}:") for key in found), sorted(found)
    kinds = {key.split(":")[1] for key in found}
    assert kinds == {
        *("rec", "dlv", "dref", "open", "created", "conv", "lease", "dryrun"),
        *("updated", "state", "fallback", "fallbacks", "ops"),
    }
    forever = {key for key, ttl in found.items() if ttl == -1}
    keys = store.keys
    assert forever == {
        *(keys.open_index, keys.created_index, keys.updated_index, keys.fallback_reasons),
        *(keys.state_index("sent"), keys.state_index("received"), keys.fallback_index("timeout")),
    }


async def test_two_prefixes_on_one_server_do_not_see_each_other(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """Stores under two prefixes keep separate records, statuses, leases, sweeper indexes
    and purges, even for the same message id."""
    left = open_store(redis_server.url, redis_prefix)
    right = open_store(redis_server.url, f"{redis_prefix}-other")
    try:
        message_id = new_wamid()
        mine = record(message_id, text="esquerda", created_at=1_000.0)
        theirs = record(message_id, text="direita", created_at=1_000.0)
        assert await left.create_if_absent([mine]) == [True]
        assert await right.get(message_id) is None
        assert await right.create_if_absent([theirs]) == [True]

        moved = replace(mine, state="sent", version=1, outbound_message_id="wamid.OUT.L")
        assert await left.save(moved, expected_version=0)
        assert await left.record_status(StatusUpdate("wamid.OUT.L", "read", 9, message_id))
        assert (await left.lease_step("shared-name", "left", 30, message_id)).taken

        assert await right.get(message_id) == theirs
        assert (await right.lease_step("shared-name", "right", 30, message_id)).taken
        assert await right.open_records(older_than=5_000.0) == [(message_id, "received")]
        assert await left.open_records(older_than=5_000.0) == []

        assert await left.purge(created_before=5_000.0) == 1
        assert await left.get(message_id) is None
        assert await right.get(message_id) == theirs
    finally:
        await left.close()
        await right.close()


# --- the sweeper index --------------------------------------------------------------------


async def test_open_records_read_the_sorted_set_and_terminal_saves_leave_it(
    rstore: RedisStore, raw: aioredis.Redis
) -> None:
    """Open records are found through the sorted set scored by last update: a save moves the
    score, a save into a terminal state removes the member, and a record missing from the
    index is not found (the keyspace is never scanned)."""
    index = rstore.keys.open_index
    done, waiting, hidden = record(), record(), record()
    await rstore.create_if_absent([done, waiting, hidden])
    assert await raw.zscore(index, done.message_id) == 1_000.0
    assert await raw.zrem(index, hidden.message_id) == 1

    finished = replace(done, state="sent", version=1, updated_at=1_500.0)
    assert await rstore.save(finished, expected_version=0)
    assert await raw.zscore(index, done.message_id) is None
    assert await rstore.open_records(older_than=2_000.0) == [(waiting.message_id, "received")]

    later = replace(waiting, state="deduped", version=1, updated_at=3_000.0)
    assert await rstore.save(later, expected_version=0)
    assert await raw.zscore(index, waiting.message_id) == 3_000.0
    assert await rstore.open_records(older_than=2_000.0) == []
    assert await rstore.open_records(older_than=4_000.0) == [(waiting.message_id, "deduped")]
    assert await rstore.get(hidden.message_id) == hidden


async def test_expired_record_is_dropped_from_the_index_by_open_records(
    rstore: RedisStore, raw: aioredis.Redis
) -> None:
    """A record whose key expired is not returned by open_records, which removes it from
    the index; the other open records are still returned."""
    expired, alive = record(), record()
    await rstore.create_if_absent([expired, alive])
    key = rstore.keys.record(expired.message_id)

    assert await raw.pexpire(key, 1)
    await anyio.sleep(0.01)  # longer than the key had left
    assert await raw.exists(key) == 0
    assert await raw.zscore(rstore.keys.open_index, expired.message_id) is not None

    assert await rstore.open_records(older_than=2_000.0) == [(alive.message_id, "received")]
    assert await raw.zscore(rstore.keys.open_index, expired.message_id) is None
    assert await raw.zscore(rstore.keys.open_index, alive.message_id) == 1_000.0


async def test_purge_removes_more_than_one_slice_of_old_records(
    rstore: RedisStore, raw: aioredis.Redis
) -> None:
    """Purging 1,203 old records (over the 500-per-call slice) deletes all of them with
    their delivery keys and index entries, returns 1,203, and keeps the young records."""
    old = [record(created_at=1_000.0 + n % 7) for n in range(1_203)]
    young = [record(created_at=1_000_000.0) for _ in range(3)]
    assert await rstore.create_if_absent(old + young) == [True] * 1_206
    for n, item in enumerate(old[:3]):
        sent = replace(item, state="sent", version=1, outbound_message_id=f"wamid.OUT.{n}")
        assert await rstore.save(sent, expected_version=0)
        assert await rstore.record_status(
            StatusUpdate(f"wamid.OUT.{n}", "read", 5, item.message_id)
        )
    keys = rstore.keys

    assert await rstore.purge(created_before=5_000.0) == 1_203

    assert await raw.zcard(keys.created_index) == 3
    assert await raw.zcard(keys.open_index) == 3
    remaining = await keys_under(raw, keys.prefix)
    counters = {key for key in remaining if key.startswith(f"{keys.prefix}:ops:")}
    assert remaining - counters == {
        keys.open_index,
        keys.created_index,
        keys.updated_index,
        keys.state_index("received"),
        *(keys.record(r.message_id) for r in young),
    }
    assert await raw.zcard(keys.updated_index) == 3
    for item in young:
        assert await rstore.get(item.message_id) == item
    assert await rstore.get(old[0].message_id) is None
    assert await rstore.purge(created_before=5_000.0) == 0


async def test_purge_counts_only_records_still_present(
    rstore: RedisStore, raw: aioredis.Redis
) -> None:
    """A record that already expired is cleaned out of the indexes by purge but not counted."""
    gone, present = record(), record()
    await rstore.create_if_absent([gone, present])
    await raw.delete(rstore.keys.record(gone.message_id))

    assert await rstore.purge(created_before=5_000.0) == 1
    assert await raw.zcard(rstore.keys.created_index) == 0
    assert await raw.zcard(rstore.keys.open_index) == 0


async def test_purge_takes_an_expired_record_out_of_the_console_indexes(
    rstore: RedisStore, raw: aioredis.Redis
) -> None:
    """A record whose hash already expired is no longer counted in its state, listed, or
    left in its reason's index once purged, though purge cannot read its state or reason."""
    keys = rstore.keys
    gone = replace(record(state="fallback"), fallback_reason="timeout")
    present = record(state="fallback")
    await rstore.create_if_absent([gone, present])
    assert await rstore.state_counts() == {"fallback": 2}
    await raw.delete(keys.record(gone.message_id))

    listed = await rstore.list_records(RecordQuery(fallback_reason="timeout"))
    assert listed.records == [], "an id whose hash is gone is skipped"
    assert await rstore.purge(created_before=5_000.0) == 1
    assert await rstore.state_counts() == {}
    for index in (keys.updated_index, keys.state_index("fallback"), keys.fallback_index("timeout")):
        assert await raw.zcard(index) == 0, index


async def test_a_page_filtered_by_state_and_reason_reads_a_bounded_slice(
    rstore: RedisStore, raw: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page filtered by state and reason reads the reason's index and skips records in
    other states, looking at no more than PAGE_SCAN entries: a page that stops there is
    shorter and its cursor goes on from the last entry looked at, so every match is found."""
    monkeypatch.setattr(redis_store, "PAGE_SCAN", 4)
    made = [
        replace(record(state=state, updated_at=float(n)), fallback_reason="timeout")
        for n, state in enumerate(["sent"] * 5 + ["fallback"] + ["sent"] * 6 + ["fallback"] * 2)
    ]
    await rstore.create_if_absent(made)
    wanted = [r.message_id for r in reversed(made) if r.state == "fallback"]

    query = RecordQuery(state="fallback", fallback_reason="timeout", limit=2)
    found: list[str] = []
    pages = 0
    while True:
        page = await rstore.list_records(query)
        pages += 1
        found += [r.message_id for r in page.records]
        if page.next_before is None:
            break
        query = replace(query, before=page.next_before)
    assert found == wanted
    assert pages >= 3, "a page looked at more than PAGE_SCAN entries"


# --- faults -------------------------------------------------------------------------------


def every_store_call(store: RedisStore, known: str) -> dict[str, Callable[[], Awaitable[object]]]:
    """One call of each StateStore method (but close), `known` being a stored record's id."""
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "create_if_absent": lambda: store.create_if_absent([record()]),
        "get": lambda: store.get(known),
        "save": lambda: store.save(record(known, state="deduped"), expected_version=0),
        "record_status": lambda: store.record_status(StatusUpdate("wamid.O", "read", 1, known)),
        "count_billable": lambda: store.count_billable("wamid.O", "service", 1.0),
        "open_records": lambda: store.open_records(older_than=time.time()),
        "failed_records": lambda: store.failed_records(since=None, limit=10),
        "purge": lambda: store.purge(created_before=2_000.0),
        "recent_turns": lambda: store.recent_turns("c", 0.0, 5),
        "release_lease": lambda: store.release_lease("l", "me"),
        "lease_step": lambda: store.lease_step("l3", "me", 5, known, turns=10),
        "finish_step": lambda: store.finish_step(
            StepCommit(
                record(known, state="deduped"),
                0,
                LeaseHold("l3", "me"),
                next_lease=LeaseHold("l4", "me", 5),
                writes=Writes(
                    slot=SlotRequest("p", 1.0, 6.0, 5),
                    turns=TurnsWrite("c", [Turn("business", "oi", 1.0)], 60, 5),
                    customer=CustomerRequest("p" * 32, "u" * 32),
                    conversation=ConversationWrite(customer_at=1.0, message_id=known),
                ),
            )
        ),
        "get_conversation": lambda: store.get_conversation("u" * 32),
        "change_conversation": lambda: store.change_conversation(
            "u" * 32, ConversationWrite(mode="human", owner="ana", at=2.0, audit=("ana", "take"))
        ),
        "list_conversations": lambda: store.list_conversations("human", 10),
        "conversation_records": lambda: store.conversation_records("u" * 32, 10),
        "customer_of": lambda: store.customer_of("p" * 32),
        "move_customer": lambda: store.move_customer("u" * 32, "v" * 32),
        "ping": store.ping,
        "durability": store.durability,
        "adopt_orphans": lambda: store.adopt_orphans(time.time(), 15.0),
        "retire": store.retire,
        "instances": store.instances,
        "state_counts": store.state_counts,
        "counter_buckets": lambda: store.counter_buckets(60, 0.0),
        "list_records": lambda: store.list_records(RecordQuery(state="failed")),
    }
    port_methods = {
        name for port in (StateStore, InstanceRegistry) for name in dir(port) if name[0] != "_"
    }
    assert set(calls) == port_methods - {"close"}
    return calls


@pytest.mark.parametrize("kill", [True, False], ids=["sigkill", "sigterm"])
async def test_store_down_raises_store_unavailable_then_the_same_store_reconnects(
    private_redis: RedisServer, redis_prefix: str, kill: bool
) -> None:
    """With Redis stopped, every store method raises StoreUnavailable (caused by a Redis
    error, within bounded time); once Redis is back, the same store object works again."""
    store = open_store(private_redis.url, redis_prefix, timeout_seconds=0.5)
    known = record()
    try:
        assert await store.create_if_absent([known]) == [True]
        private_redis.stop(kill=kill)

        for name, call in every_store_call(store, known.message_id).items():
            with anyio.fail_after(30), pytest.raises(StoreUnavailable) as caught:
                await call()
            assert isinstance(caught.value.__cause__, RedisError), name

        private_redis.start()
        await store.ping()
        assert await store.get(known.message_id) == known
        fresh = record()
        assert await store.create_if_absent([fresh, known]) == [True, False]
        moved = replace(known, state="deduped", version=1)
        assert await store.save(moved, expected_version=0)
        assert sorted(await store.open_records(older_than=2_000.0)) == sorted(
            [(known.message_id, "deduped"), (fresh.message_id, "received")]
        )
        assert (await store.lease_step("after", "me", 5, fresh.message_id)).taken
    finally:
        await store.close()


async def test_writes_acknowledged_before_a_sigkill_survive_the_restart(
    private_redis: RedisServer, redis_prefix: str
) -> None:
    """Records, saves, statuses and turns written before Redis is killed (SIGKILL) are read
    back by the same store after the restart, with no failed call: every pooled connection
    the restart dropped is retried once on a new one, and the scripts (lost with the
    server's script cache) are loaded again, all without rebuilding the store."""
    store = open_store(private_redis.url, redis_prefix, timeout_seconds=0.5)
    records = [record() for _ in range(20)]
    try:
        assert await store.create_if_absent(records) == [True] * 20
        # Several pooled connections, each of which the restart will have dropped.
        await asyncio.gather(*(store.get(r.message_id) for r in records))
        check = private_redis.client()
        try:
            assert len(check.client_list()) > 2  # the store's connections and this one
        finally:
            check.close()
        sent = replace(records[0], state="sent", version=1, outbound_message_id="wamid.OUT.K")
        assert await store.save(sent, expected_version=0)
        assert await store.record_status(
            StatusUpdate("wamid.OUT.K", "delivered", 3, records[0].message_id)
        )
        turns = TurnsWrite("conv", [Turn("customer", "olá", 10.0)], 3600, 10)
        await store.finish_step(
            StepCommit(sent, 9, LeaseHold("l-t", "me"), writes=Writes(turns=turns))
        )

        private_redis.stop(kill=True)
        private_redis.start()

        # Each stale connection fails once and is retried on a new one: no call fails.
        after = await asyncio.gather(*(store.get(r.message_id) for r in records))
        assert after == [
            replace(sent, delivery_status="delivered", delivery_outbound_id="wamid.OUT.K"),
            *records[1:],
        ]
        assert await store.recent_turns("conv", 0.0, 10) == [Turn("customer", "olá", 10.0)]
        assert await store.create_if_absent(records[:2]) == [False, False]
        assert len(await store.open_records(older_than=2_000.0)) == 19
    finally:
        await store.close()


async def test_a_frozen_redis_fails_calls_after_the_timeout_then_recovers(
    private_redis: RedisServer, redis_prefix: str
) -> None:
    """A Redis that accepts connections but never answers (SIGSTOP) makes calls raise
    StoreUnavailable once the socket timeout passes instead of hanging; after it resumes,
    the same store answers again."""
    store = open_store(private_redis.url, redis_prefix, timeout_seconds=0.5)
    known = record()
    process = private_redis.process
    assert process is not None
    try:
        assert await store.create_if_absent([known]) == [True]
        process.send_signal(signal.SIGSTOP)
        try:
            calls: list[Callable[[], Awaitable[object]]] = [
                store.ping,
                lambda: store.get(known.message_id),
            ]
            for call in calls:
                started = time.monotonic()
                with anyio.fail_after(20), pytest.raises(StoreUnavailable):
                    await call()
                assert time.monotonic() - started >= 0.5  # it waited for the timeout
        finally:
            process.send_signal(signal.SIGCONT)
        await store.ping()
        assert await store.get(known.message_id) == known
    finally:
        await store.close()


# --- the Redis dry-run outbox -------------------------------------------------------------


@pytest.fixture
async def outbox(redis_server: RedisServer, redis_prefix: str) -> AsyncIterator[RedisDryRunOutbox]:
    """A Redis dry-run outbox under this test's prefix."""
    client = connect(redis_server.url)
    yield RedisDryRunOutbox(client, RedisKeys(redis_prefix), RETENTION_SECONDS)
    await client.aclose()


async def test_outbox_send_returns_distinct_ids_and_records_the_exact_body(
    outbox: RedisDryRunOutbox,
) -> None:
    """Each send returns a new wamid-shaped id, and the log keeps the exact body, in order."""
    first, second = reply("cb-1"), reply("cb-2", text="Segunda resposta — ✓")
    first["context"]["extra"] = {"lista": [1, "dois", None, 3.5]}

    ids = [await outbox.send(first), await outbox.send(second)]
    ids += [await outbox.send(reply(f"cb-{n}")) for n in range(3, 21)]

    assert len(set(ids)) == 20
    assert all(WAMID.match(i) for i in ids), ids
    sent = await outbox.sent()
    assert sent[:2] == [first, second]
    assert len(sent) == 20
    assert json.dumps(sent[0], ensure_ascii=False) == json.dumps(first, ensure_ascii=False)


async def test_outbox_find_sent_names_the_first_send_and_sent_filters(
    outbox: RedisDryRunOutbox,
) -> None:
    """find_sent gives the FIRST send's id for a callback (None for unknown ones), and
    sent(message_id=...) lists only that record's bodies."""
    first = await outbox.send(reply("cb-twice", text="primeira"))
    other = await outbox.send(reply("cb-other"))
    await outbox.send(reply("cb-twice", text="segunda"))

    assert await outbox.find_sent("cb-twice") == first
    assert await outbox.find_sent("cb-other") == other
    assert await outbox.find_sent("cb-unknown") is None
    twice = await outbox.sent(message_id="cb-twice")
    assert [b["text"]["body"] for b in twice] == ["primeira", "segunda"]
    assert await outbox.sent(message_id="cb-unknown") == []


async def test_outbox_is_shared_by_instances_on_one_prefix(
    redis_server: RedisServer, redis_prefix: str, outbox: RedisDryRunOutbox
) -> None:
    """An outbox of another instance (its own client) on the same prefix sees the sends."""
    body = reply("cb-shared")
    sent_id = await outbox.send(body)
    client = connect(redis_server.url)
    try:
        elsewhere = RedisDryRunOutbox(client, RedisKeys(redis_prefix), RETENTION_SECONDS)
        assert await elsewhere.find_sent("cb-shared") == sent_id
        assert await elsewhere.sent() == [body]
    finally:
        await client.aclose()


async def test_outbox_log_is_capped_and_expires(
    outbox: RedisDryRunOutbox, raw: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log keeps only the newest DRY_RUN_LOG_LENGTH bodies (5 here) and, like the
    first-send markers, expires after the retention; find_sent still knows trimmed sends."""
    monkeypatch.setattr(dry_run_outbox, "DRY_RUN_LOG_LENGTH", 5)
    bodies = [reply(f"cb-{n}") for n in range(8)]
    ids = [await outbox.send(body) for body in bodies]

    assert await outbox.sent() == bodies[3:]
    assert await raw.llen(outbox.keys.dry_run_log) == 5
    assert await outbox.find_sent("cb-0") == ids[0]
    for key in (outbox.keys.dry_run_log, outbox.keys.dry_run_sent(reply_key("cb-0"))):
        assert RETENTION_SECONDS - TTL_SLACK <= await raw.ttl(key) <= RETENTION_SECONDS


async def test_outbox_with_redis_down_raises_transient_step_error(
    private_redis: RedisServer, redis_prefix: str
) -> None:
    """With Redis stopped, send and find_sent raise TransientStepError (the send step is
    retried), and nothing is recorded; after the restart, sends work on the same outbox."""
    client = connect(private_redis.url, timeout_seconds=0.5)
    outbox = RedisDryRunOutbox(client, RedisKeys(redis_prefix), RETENTION_SECONDS)
    before, after = reply("cb-before"), reply("cb-after")
    try:
        await outbox.send(before)
        private_redis.stop()
        with anyio.fail_after(30):
            with pytest.raises(TransientStepError):
                await outbox.send(reply("cb-down"))
            with pytest.raises(TransientStepError):
                await outbox.find_sent("cb-before")
        private_redis.start()
        assert await outbox.find_sent("cb-down") is None
        await outbox.send(after)
        assert await outbox.sent() == [before, after]
    finally:
        await client.aclose()


# --- conversations ------------------------------------------------------------------------


async def test_a_conversation_expires_with_the_records_and_listings_drop_the_gone(
    rstore: RedisStore, raw: aioredis.Redis
) -> None:
    """A conversation's hash, its trail and its index of records live as long as the records
    (renewed by each write); once its hash is gone, listing a mode drops it from the index,
    and a record purged leaves its conversation's records."""
    keys = rstore.keys
    key = "k" * 32
    reply = replace(record(created_at=1_000.0), conversation=key)
    await rstore.create_if_absent([reply])
    write = ConversationWrite(mode="waiting_human", at=1_000.0, audit=("pyloto", "asked"))
    assert await rstore.change_conversation(key, write) is not None
    for name in (keys.chat(key), keys.chat_audit(key), keys.chat_records(key)):
        ttl = await raw.ttl(name)
        assert rstore.record_ttl - 5 <= ttl <= rstore.record_ttl, name

    await raw.delete(keys.chat(key))  # as its TTL would
    assert await rstore.list_conversations("waiting_human", 10) == []
    assert await rstore.list_conversations(None, 10) == []
    assert await raw.zscore(keys.chat_mode("waiting_human"), key) is None
    assert await raw.zscore(keys.chats, key) is None

    assert [r.message_id for r in await rstore.conversation_records(key, 10)] == [reply.message_id]
    assert await rstore.purge(created_before=2_000.0) == 1
    assert await raw.zcard(keys.chat_records(key)) == 0


async def test_a_claim_refused_by_the_conversations_mode_takes_no_token(
    rstore: RedisStore, raw: aioredis.Redis
) -> None:
    """A send claim whose conversation is no longer in `bot` saves nothing, answers
    mode_changed and leaves the customer's pacing bucket as it was."""
    key = "h" * 32
    stored = replace(record(state="queued_outbound"), conversation=key)
    await rstore.create_if_absent([stored])
    await rstore.change_conversation(key, ConversationWrite(mode="human", owner="ana", at=1.0))
    claim = StepCommit(
        replace(stored, state="sending", version=stored.version + 1),
        stored.version,
        LeaseHold(f"{stored.message_id}:queued_outbound", "me"),
        writes=Writes(
            slot=SlotRequest(key, 10.0, 1.0, 5),
            conversation=ConversationWrite(key=key, expect_mode="bot"),
        ),
    )
    done = await rstore.finish_step(claim)
    assert (done.saved, done.mode_changed, done.wait) == (False, True, 0.0)
    assert await raw.exists(rstore.keys.pacing(key)) == 0
    assert await rstore.get(stored.message_id) == stored
