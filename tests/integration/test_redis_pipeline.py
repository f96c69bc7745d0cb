"""The whole pipeline on Redis without HTTP: bootstrap with STATE_BACKEND=redis, the local
queue, the Redis dry-run outbox; one or two containers ("instances") on one server and prefix.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace

import anyio
import pytest
import redis.asyncio as aioredis

from pyloto_corp.adapters.dry_run_outbox import RedisDryRunOutbox
from pyloto_corp.adapters.local_queue import LocalQueue
from pyloto_corp.adapters.redis import RedisKeys, RedisStore, connect
from pyloto_corp.adapters.whatsapp_webhook import parse_webhook
from pyloto_corp.application.ingest import sign, verify_signature
from pyloto_corp.application.ports import Task, TransientStepError
from pyloto_corp.application.queues import STEP_LEASE_SECONDS, STUCK_AFTER_SECONDS
from pyloto_corp.bootstrap import Container, bootstrap, queue_specs
from pyloto_corp.config import Settings
from pyloto_corp.domain.records import Record
from tests.integration.conftest import RETENTION_SECONDS, terminal_states
from tests.integration.factories import queued_record, record, wait_for_states
from tests.support.helpers import APP_SECRET, encode, envelope, new_wamid, text_message
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.anyio

FULL_PATH = ["received", "deduped", "fallback", "queued_outbound", "sending", "sent"]


@pytest.fixture
def redis_settings(
    make_settings: Callable[..., Settings], redis_server: RedisServer, redis_prefix: str
) -> Settings:
    """Settings on the session's Redis under this test's prefix."""
    return make_settings(
        STATE_BACKEND="redis", REDIS_URL=redis_server.url, REDIS_KEY_PREFIX=redis_prefix
    )


@asynccontextmanager
async def instances(settings: Settings, count: int = 1) -> AsyncIterator[list[Container]]:
    """`count` started containers on the same settings (one Redis, one prefix), then stopped."""
    async with AsyncExitStack() as stack:
        started = []
        for _ in range(count):
            container = bootstrap(settings)
            await container.start()
            stack.push_async_callback(container.stop)
            started.append(container)
        yield started


def outbox_of(container: Container) -> RedisDryRunOutbox:
    """The container's Redis dry-run outbox."""
    assert isinstance(container.outbox, RedisDryRunOutbox)
    return container.outbox


def store_of(container: Container) -> RedisStore:
    """The container's Redis store."""
    assert isinstance(container.store, RedisStore)
    return container.store


def signed_body(*texts: str) -> tuple[bytes, list[str]]:
    """A webhook body (its signature checked) with one text message per text, and their ids."""
    messages = [text_message(text) for text in texts]
    body = encode(envelope(messages))
    verify_signature(body, sign(body, APP_SECRET), APP_SECRET)
    return body, [str(m["id"]) for m in messages]


def path_of(item: Record) -> list[str]:
    """The states a record went through, from its history."""
    return [item.history[0].source, *(entry.dest for entry in item.history)]


async def keys_under(client: aioredis.Redis, pattern: str) -> list[str]:
    """Keys matching `pattern` (which starts with this test's prefix)."""
    return [key.decode() async for key in client.scan_iter(match=pattern, count=1000)]


async def test_five_messages_reach_sent_with_one_send_each(redis_settings: Settings) -> None:
    """A signed body with 5 messages, ingested on Redis: every record reaches `sent` along the
    fallback path with exactly one dry-run send, leaves the sweeper index, holds no lease."""
    body, message_ids = signed_body(*(f"Mensagem número {n}" for n in range(5)))

    async with instances(redis_settings) as (container,):
        result = await container.ingestor.ingest(parse_webhook(body))
        done = await wait_for_states(container.store, message_ids, {"sent", "failed"})
        outbox = outbox_of(container)
        sends = {m: await outbox.sent(message_id=m) for m in message_ids}
        first_ids = {m: await outbox.find_sent(m) for m in message_ids}
        keys = store_of(container).keys
        client = store_of(container).client
        open_count = await client.zcard(keys.open_index)
        leases = await keys_under(client, f"{keys.prefix}:lease:*")

    assert (result.created, result.duplicates) == (5, 0)
    for message_id, item in done.items():
        assert item.state == "sent", message_id
        assert path_of(item) == FULL_PATH
        assert sends[message_id] == [item.reply]
        assert first_ids[message_id] == item.outbound_message_id
    assert open_count == 0
    assert leases == []


async def test_two_instances_ingesting_one_body_at_once_store_and_send_once(
    redis_settings: Settings,
) -> None:
    """Two containers on one Redis and prefix ingest the same 5-message body concurrently:
    each message gets one record and one reply, whichever instance created it."""
    body, message_ids = signed_body(*(f"Oi, pedido {n}" for n in range(5)))

    async with instances(redis_settings, count=2) as (left, right):
        results = await asyncio.gather(
            left.ingestor.ingest(parse_webhook(body)), right.ingestor.ingest(parse_webhook(body))
        )
        done = await wait_for_states(left.store, message_ids, {"sent", "failed"})
        await asyncio.sleep(0.2)  # several retry backoffs: a duplicate send would show up
        sends = {m: await outbox_of(right).sent(message_id=m) for m in message_ids}
        every_send = await outbox_of(left).sent()

    assert sum(r.created for r in results) == 5
    assert sum(r.duplicates for r in results) == 5
    assert {item.state for item in done.values()} == {"sent"}
    for message_id in message_ids:
        assert sends[message_id] == [done[message_id].reply], message_id
    assert len(every_send) == 5


async def test_concurrent_send_tasks_on_two_instances_send_once(redis_settings: Settings) -> None:
    """The same send task delivered 3 times to each of two instances at once: one delivery
    sends, the others are stale or told to retry, a later redelivery is stale; one reply."""
    async with instances(redis_settings, count=2) as (left, right):
        queued = queued_record(created_at=time.time())
        assert await left.store.create_if_absent([queued]) == [True]

        outcomes = await asyncio.gather(
            *(
                container.advancer.advance(queued.message_id, "queued_outbound")
                for container in (left, right, left, right, left, right)
            ),
            return_exceptions=True,
        )
        late = await right.advancer.advance(queued.message_id, "queued_outbound")
        done = await left.store.get(queued.message_id)
        sends = await outbox_of(left).sent(message_id=queued.message_id)

    assert outcomes.count("sent") == 1, outcomes
    assert all(o in ("sent", "stale") or isinstance(o, TransientStepError) for o in outcomes)
    assert late == "stale"
    assert done is not None
    assert done.state == "sent"
    assert sends == [queued.reply]


async def test_a_held_lease_stops_the_other_instance_until_released(
    redis_settings: Settings,
) -> None:
    """While a step's lease is held (taken by hand, as another instance would), advancing that
    step from another instance raises TransientStepError and runs nothing: no claim, no
    send, no save. Once the lease is released, the step runs and the reply goes out once."""
    async with instances(redis_settings, count=2) as (holder, other):
        queued = queued_record(created_at=time.time())
        assert await holder.store.create_if_absent([queued]) == [True]
        lease = f"{queued.message_id}:queued_outbound"
        assert (
            await holder.store.lease_step(lease, "holder", STEP_LEASE_SECONDS, queued.message_id)
        ).taken

        with pytest.raises(TransientStepError):
            await other.advancer.advance(queued.message_id, "queued_outbound")
        untouched = await other.store.get(queued.message_id)
        sends_while_held = await outbox_of(other).sent(message_id=queued.message_id)
        still_held = await store_of(holder).client.get(store_of(holder).keys.lease(lease))

        await holder.store.release_lease(lease, "holder")
        outcome = await other.advancer.advance(queued.message_id, "queued_outbound")
        done = await holder.store.get(queued.message_id)
        sends = await outbox_of(holder).sent(message_id=queued.message_id)

    assert untouched == queued
    assert sends_while_held == []
    assert still_held == b"holder"  # the refused delivery did not release someone else's lease
    assert outcome == "sent"
    assert done is not None
    assert done.state == "sent"
    assert sends == [queued.reply]


async def test_held_lease_on_the_first_step_delays_it_without_losing_it(
    make_settings: Callable[..., Settings], redis_server: RedisServer, redis_prefix: str
) -> None:
    """An ingested message whose first step's lease is held stays `received` while it is held
    (the queue retries the task); once released, a retry takes it to `sent`."""
    settings = make_settings(
        STATE_BACKEND="redis",
        REDIS_URL=redis_server.url,
        REDIS_KEY_PREFIX=redis_prefix,
        # Retries spread over more than a second, so the lease is released well before the
        # task would run out of attempts.
        LOCAL_QUEUE_MIN_BACKOFF_SECONDS="0.02",
        LOCAL_QUEUE_MAX_BACKOFF_SECONDS="0.2",
    )
    body, (message_id,) = signed_body("Vocês abrem amanhã?")

    async with instances(settings, count=2) as (holder, other):
        lease = f"{message_id}:received"
        assert (
            await holder.store.lease_step(lease, "holder", STEP_LEASE_SECONDS, message_id)
        ).taken
        assert (await other.ingestor.ingest(parse_webhook(body))).created == 1
        await asyncio.sleep(0.1)  # at least a couple of the queue's retries
        waiting = await holder.store.get(message_id)
        await holder.store.release_lease(lease, "holder")
        done = (await wait_for_states(holder.store, [message_id], {"sent", "failed"}))[message_id]

    assert waiting is not None
    assert waiting.state == "received"
    assert waiting.history == []
    assert done.state == "sent"
    assert done.attempts["received"] >= 2  # the refused attempts were retried, not dropped


async def test_start_up_sweep_requeues_only_stuck_records_on_a_shared_store(
    redis_settings: Settings, redis_server: RedisServer
) -> None:
    """A container sharing Redis re-queues at start-up the open records untouched for longer
    than the stuck deadline (found through the sorted set) and leaves fresh ones alone, as
    another instance may be working on them; each stuck record is then sent once."""
    now = time.time()
    stuck_at = now - STUCK_AFTER_SECONDS - 60
    stuck = [
        record(state="received", created_at=stuck_at),
        replace(record(state="deduped", created_at=stuck_at), version=1),
        queued_record(created_at=stuck_at),
    ]
    fresh = record(state="received", created_at=now)
    keys = RedisKeys(redis_settings.state.redis_key_prefix)
    earlier = RedisStore(connect(redis_server.url), terminal_states(), RETENTION_SECONDS, keys)
    try:
        assert await earlier.create_if_absent([*stuck, fresh]) == [True] * 4
    finally:
        await earlier.close()

    async with instances(redis_settings) as (container,):
        done = await wait_for_states(
            container.store, [r.message_id for r in stuck], {"sent", "failed"}
        )
        await asyncio.sleep(0.1)  # time for a wrongly queued fresh record to move
        left_alone = await container.store.get(fresh.message_id)
        outbox = outbox_of(container)
        sends = {r.message_id: await outbox.sent(message_id=r.message_id) for r in stuck}

    assert {item.state for item in done.values()} == {"sent"}
    assert all(len(bodies) == 1 for bodies in sends.values()), sends
    assert left_alone == fresh


async def test_queue_stops_even_when_a_task_swallows_its_cancellation(
    make_settings: Callable[..., Settings],
) -> None:
    """LocalQueue.stop() returns although a running task swallowed the cancellation meant to
    stop its worker (redis-py's send uses asyncio.wait_for, which on Python 3.11 can lose a
    cancellation that arrives as the send completes; stopping a Redis container mid-step hung
    forever that way): the worker exits once its task returns."""
    queue = LocalQueue(queue_specs(make_settings()))
    running = asyncio.Event()

    async def swallowing(task: Task, attempt: int) -> None:
        running.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            return  # lost, as asyncio.wait_for can lose it

    queue.start(swallowing)
    await queue.enqueue(Task(new_wamid(), "received", "inbound"))
    with anyio.fail_after(10):
        await running.wait()
        await queue.stop()
