"""The console's read of the instances on Redis: each one's last beat, retired ones, and the
tally of records each adopted from dead instances, kept by the adoption script itself.

Each store is one instance on the test's own Redis; time is passed explicitly."""

from __future__ import annotations

import pytest

from pyloto_corp.adapters.redis import RedisKeys, connect
from pyloto_corp.adapters.redis.keys import ADOPTED_TTL_SECONDS
from pyloto_corp.application.ports import INSTANCES_LISTED, InstanceBeat
from pyloto_corp.application.queue_figures import instance_rows
from pyloto_corp.application.queues import DEAD_AFTER_SECONDS
from tests.integration.factories import record
from tests.integration.test_instance_adoption import Instance, instance
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.anyio

T0 = 20_000.0
DEAD = DEAD_AFTER_SECONDS


__all__ = ["instance"]  # the fixture: instance stores by name on the test's Redis


def by_id(beats: list[InstanceBeat]) -> dict[str, InstanceBeat]:
    return {b.instance_id: b for b in beats}


async def test_no_instance_has_beaten_yet(instance: Instance) -> None:
    assert await instance("alone").instances() == []


async def test_instances_are_read_with_their_beats_and_the_reader_marked(
    instance: Instance,
) -> None:
    first, second, leaving = instance("first"), instance("second"), instance("leaving")
    await first.adopt_orphans(T0, DEAD)
    await leaving.adopt_orphans(T0 + 1, DEAD)
    await second.adopt_orphans(T0 + 2, DEAD)
    await leaving.retire()
    found = await first.instances()
    assert [b.instance_id for b in found] == ["second", "first", "leaving"]  # latest first
    beats = by_id(found)
    assert beats["first"].beat_at == T0
    assert beats["first"].this
    assert beats["second"].beat_at == T0 + 2
    assert not beats["second"].this
    assert beats["leaving"].beat_at == 0.0  # retired
    assert all(b.adopted == 0 and b.adopted_at is None for b in found)
    rows = {r.instance_id: r.status for r in instance_rows(found, T0 + 3)}
    assert rows == {"first": "live", "second": "live", "leaving": "retired"}


async def test_adoptions_are_counted_per_adopter_and_outlive_the_dead_one(
    instance: Instance, redis_server: RedisServer, redis_prefix: str
) -> None:
    dead, live = instance("dead"), instance("live")
    await dead.adopt_orphans(T0, DEAD)
    await live.adopt_orphans(T0, DEAD)
    await dead.create_if_absent([record(f"wamid.ORPHAN{n}") for n in range(3)])
    later = T0 + DEAD + 1
    beat = await live.adopt_orphans(later, DEAD)
    assert len(beat.adopted) == 3
    beats = by_id(await live.instances())
    assert (beats["live"].adopted, beats["live"].adopted_at) == (3, later)
    assert beats["dead"].adopted == 0
    assert beats["dead"].beat_at == T0
    # A pass that finds nothing of the dead one forgets it; the adopter's tally stays.
    await live.adopt_orphans(later + 1, DEAD)
    beats = by_id(await live.instances())
    assert set(beats) == {"live"}
    assert beats["live"].adopted == 3
    client = connect(redis_server.url, 2.0)
    try:
        ttl = await client.ttl(RedisKeys(redis_prefix).instances_adopted)
    finally:
        await client.aclose()
    assert 0 < ttl <= ADOPTED_TTL_SECONDS


async def test_an_adopter_forgotten_since_is_still_listed_with_its_adoptions(
    instance: Instance,
) -> None:
    """An instance that adopted records and then died is forgotten from the heartbeats once
    nothing of it is left; its adoptions stay on the page as a `gone` instance."""
    first, adopter, survivor = instance("first"), instance("adopter"), instance("survivor")
    for store in (first, adopter, survivor):
        await store.adopt_orphans(T0, DEAD)
    await first.create_if_absent([record("wamid.LEFT")])
    t1 = T0 + DEAD + 1
    await survivor.adopt_orphans(t1 - 2, DEAD)  # beats, too early to adopt
    assert len((await adopter.adopt_orphans(t1, DEAD)).adopted) == 1
    t2 = t1 + DEAD + 1  # the adopter dies in turn; the survivor adopts its record
    assert len((await survivor.adopt_orphans(t2, DEAD)).adopted) == 1
    await survivor.adopt_orphans(t2 + 1, DEAD)  # finds nothing: the dead are forgotten
    beats = by_id(await survivor.instances())
    assert beats["adopter"].beat_at is None
    assert beats["adopter"].adopted == 1
    assert beats["survivor"].adopted == 1
    assert beats["survivor"].beat_at == t2 + 1
    assert "first" not in beats  # adopted nothing, forgotten
    statuses = {r.instance_id: r.status for r in instance_rows(list(beats.values()), t2 + 1)}
    assert statuses == {"adopter": "gone", "survivor": "live"}


async def test_at_most_so_many_instances_are_listed(instance: Instance) -> None:
    stores = [instance(f"i{n:03}") for n in range(INSTANCES_LISTED + 3)]
    for n, store in enumerate(stores):
        await store.adopt_orphans(T0 + n, DEAD * 1000)
    found = await stores[0].instances()
    assert len(found) == INSTANCES_LISTED
    assert found[0].instance_id == stores[-1].instance_id  # the latest beats are kept
