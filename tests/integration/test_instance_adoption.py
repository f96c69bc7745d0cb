"""Instances sharing Redis adopt the open records of a dead one, each record exactly once.

Every store below is one instance (its own connection pool and instance id) on the test's
private Redis; time is passed explicitly, so "silent for 15 s" needs no waiting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import replace

import pytest

from pyloto_corp.adapters.redis import ADOPT_SLICE, RedisKeys, RedisStore, connect
from pyloto_corp.application.ports import Adoption, StoreUnavailable
from pyloto_corp.application.queues import DEAD_AFTER_SECONDS
from pyloto_corp.application.sweeper import Sweeper
from pyloto_corp.bootstrap import load_chart
from tests.integration.conftest import RETENTION_SECONDS, terminal_states
from tests.integration.factories import record
from tests.support.helpers import eventually
from tests.support.redis_server import RedisServer
from tests.unit.fakes import FakeQueue

pytestmark = pytest.mark.anyio

T0 = 10_000.0
DEAD = DEAD_AFTER_SECONDS
Instance = Callable[[str], RedisStore]


@pytest.fixture
async def instance(redis_server: RedisServer, redis_prefix: str) -> AsyncIterator[Instance]:
    """Build instance stores by name (closed at the end)."""
    async with AsyncExitStack() as stack:

        def create(name: str) -> RedisStore:
            client = connect(redis_server.url, 2.0)
            keys = RedisKeys(redis_prefix)
            store = RedisStore(client, terminal_states(), RETENTION_SECONDS, keys, name)
            stack.push_async_callback(store.close)
            return store

        yield create


async def test_the_open_records_of_a_silent_instance_are_adopted_by_a_live_one(
    instance: Instance,
) -> None:
    dead, live = instance("dead"), instance("live")
    assert (await dead.adopt_orphans(T0, DEAD)).adopted == []
    assert (await live.adopt_orphans(T0, DEAD)).adopted == []
    open_ids = [f"wamid.ORPHAN{n}" for n in range(3)]
    await dead.create_if_absent([record(m) for m in open_ids])
    finished = record("wamid.FINISHED")
    await dead.create_if_absent([finished])
    assert await dead.save(replace(finished, state="sent", version=1), expected_version=0)
    await live.create_if_absent([record("wamid.LIVES")])

    # Still beating (or not silent for long enough): nothing is adopted.
    assert (await live.adopt_orphans(T0 + DEAD - 1, DEAD)).adopted == []
    assert (await dead.adopt_orphans(T0 + DEAD, DEAD)).adopted == []

    later = T0 + 2 * DEAD + 1
    adopted = (await live.adopt_orphans(later, DEAD)).adopted
    assert sorted(adopted) == [(m, "received") for m in open_ids]
    # Now the live instance's: a second pass adopts nothing, and forgets the dead instance.
    assert (await live.adopt_orphans(later + 1, DEAD)).adopted == []
    assert (await live.adopt_orphans(later + 2, DEAD)).adopted == []


async def test_two_live_instances_racing_adopt_each_record_once(instance: Instance) -> None:
    dead = instance("dead")
    rivals = [instance(f"live-{n}") for n in range(4)]
    await dead.adopt_orphans(T0, DEAD)
    ids = [f"wamid.RACE{n}" for n in range(ADOPT_SLICE + 200)]  # more than one slice
    for start in range(0, len(ids), 500):
        await dead.create_if_absent([record(m) for m in ids[start : start + 500]])
    for rival in rivals:  # alive, and `dead` not silent for long enough yet
        assert (await rival.adopt_orphans(T0 + DEAD, DEAD)).adopted == []

    results = await asyncio.gather(*(r.adopt_orphans(T0 + DEAD + 1, DEAD) for r in rivals))

    adopted = [message_id for result in results for message_id, _ in result.adopted]
    assert sorted(adopted) == sorted(ids)


async def test_a_record_saved_by_another_instance_becomes_that_ones(instance: Instance) -> None:
    first, second = instance("first"), instance("second")
    await first.adopt_orphans(T0, DEAD)
    await second.adopt_orphans(T0, DEAD)
    created = record("wamid.MOVED")
    await first.create_if_absent([created])
    assert await second.save(replace(created, state="deduped", version=1), expected_version=0)

    # `first` dies: the record is `second`'s (it holds the next task), so nothing is adopted.
    assert (await second.adopt_orphans(T0 + 2 * DEAD, DEAD)).adopted == []


async def test_a_retired_instance_is_adopted_from_without_waiting(instance: Instance) -> None:
    leaving, staying = instance("leaving"), instance("staying")
    await leaving.adopt_orphans(T0, DEAD)
    await staying.adopt_orphans(T0, DEAD)
    await leaving.create_if_absent([record("wamid.LEFT")])
    await leaving.retire()

    assert (await staying.adopt_orphans(T0 + 1, DEAD)).adopted == [("wamid.LEFT", "received")]


async def test_the_sweeper_queues_what_it_adopts_but_not_after_missing_its_own_beats(
    instance: Instance,
) -> None:
    dead, live = instance("dead"), instance("live")
    clock = [T0]
    queue = FakeQueue()
    sweeper = Sweeper(live, queue, load_chart(), lambda: clock[0], RETENTION_SECONDS)
    await dead.adopt_orphans(T0, DEAD)
    await sweeper.adopt(live, DEAD)  # the first beat never adopts
    await dead.create_if_absent([record("wamid.QUEUED")])

    # This instance was itself silent (a Redis outage, say): it beats, adopts nothing yet.
    clock[0] = T0 + 3 * DEAD
    assert await sweeper.adopt(live, DEAD) == 0
    clock[0] += 5
    assert await sweeper.adopt(live, DEAD) == 1
    (task,) = queue.tasks
    assert (task.message_id, task.state, task.queue) == ("wamid.QUEUED", "received", "inbound")
    assert task.generation.startswith("adopt-")


async def test_with_cloud_tasks_the_beat_adopts_nothing(instance: Instance) -> None:
    """Cloud Tasks keeps the tasks of a dead instance: beating there never adopts."""
    dead, live = instance("dead"), instance("live")
    clock = [T0]
    queue = FakeQueue()
    sweeper = Sweeper(live, queue, load_chart(), lambda: clock[0], RETENTION_SECONDS)
    await dead.adopt_orphans(T0, DEAD)
    await dead.create_if_absent([record("wamid.INCLOUDTASKS")])
    for _ in range(3):
        assert await sweeper.adopt(live, DEAD, adopting=False) == 0
        clock[0] += DEAD
    assert queue.tasks == []


class DownRegistry:
    """An instance registry whose store is unreachable."""

    async def adopt_orphans(self, now: float, dead_after_seconds: float) -> Adoption:
        raise StoreUnavailable("redis: Error 111 connecting to 127.0.0.1:6379")

    async def retire(self) -> None:
        raise StoreUnavailable("redis: Error 111 connecting to 127.0.0.1:6379")


async def test_a_store_outage_is_one_warning_line_a_beat(
    instance: Instance, caplog: pytest.LogCaptureFixture
) -> None:
    sweeper = Sweeper(instance("live"), FakeQueue(), load_chart(), time.time, RETENTION_SECONDS)
    with caplog.at_level(logging.WARNING, logger="pyloto_corp"):
        sweeper.watch(DownRegistry(), 0.01, DEAD)
        await eventually(
            lambda: (
                sum(r.__dict__.get("event") == "instance_watch_failed" for r in caplog.records) >= 3
            )
        )
        await sweeper.stop()
    failed = [r for r in caplog.records if r.__dict__.get("event") == "instance_watch_failed"]
    assert {(r.levelno, r.exc_info) for r in failed} == {(logging.WARNING, None)}
    assert "Error 111" in failed[0].__dict__["detail"]


async def test_adopting_a_record_frees_its_step_lease_held_by_the_dead_instance(
    instance: Instance,
) -> None:
    """An instance killed mid-step leaves its lease on the step (a minute long): adoption
    frees it, so the adopted step runs at once instead of being "busy" until it runs out.
    A lease a live instance holds, and a lease on another step, are left alone."""
    dead, live = instance("dead"), instance("live")
    for store in (dead, live):
        await store.adopt_orphans(T0, DEAD)
    mid_step, other = record("wamid.MIDSTEP"), record("wamid.OTHERSTEP")
    await dead.create_if_absent([mid_step, other])
    held = await dead.lease_step("wamid.MIDSTEP:received", "dead:1", 60, "wamid.MIDSTEP")
    assert held.taken
    other_step = await dead.lease_step("wamid.OTHERSTEP:deduped", "dead:2", 60, "wamid.OTHERSTEP")
    assert other_step.taken  # not the record's state
    assert (await live.lease_step("wamid.LIVE:received", "live:3", 60, "wamid.LIVE")).taken

    assert not (
        await live.lease_step("wamid.MIDSTEP:received", "live:4", 60, "wamid.MIDSTEP")
    ).taken
    adopted = (await live.adopt_orphans(T0 + 2 * DEAD + 1, DEAD)).adopted

    assert sorted(adopted) == [("wamid.MIDSTEP", "received"), ("wamid.OTHERSTEP", "received")]
    again = await live.lease_step("wamid.MIDSTEP:received", "live:5", 60, "wamid.MIDSTEP")
    assert again.taken
    assert again.record == mid_step
    assert not (
        await live.lease_step("wamid.OTHERSTEP:deduped", "live:6", 60, "wamid.OTHERSTEP")
    ).taken
    assert not (await live.lease_step("wamid.LIVE:received", "live:7", 60, "wamid.LIVE")).taken
