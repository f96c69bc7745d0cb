"""Group commit on both stores: concurrent callers share writes, each id is created once, and
nobody is answered before the write that holds their records has returned."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace

import pytest

from pyloto_corp.application.group_commit import GroupCommit
from pyloto_corp.application.ports import StateStore, StoreUnavailable
from pyloto_corp.domain.records import Record
from tests.integration.factories import record
from tests.support.helpers import new_wamid

pytestmark = pytest.mark.anyio


class CountingStore:
    """The real store behind the port, counting the create calls it is given."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.calls: list[int] = []
        self.fail_next = False

    async def create_if_absent(self, records: Sequence[Record]) -> list[bool]:
        self.calls.append(len(records))
        if self.fail_next:
            self.fail_next = False
            raise StoreUnavailable("store down")
        return await self.store.create_if_absent(records)


async def test_concurrent_callers_share_writes_and_each_id_is_created_once(
    store: StateStore,
) -> None:
    """200 callers at once, a quarter of them repeating an id another caller gives: far
    fewer writes than callers, every distinct id created exactly once and stored."""
    counting = CountingStore(store)
    group = GroupCommit(counting)  # type: ignore[arg-type]  # only create_if_absent is used
    ids = [new_wamid() for _ in range(150)]
    batches = [[record(message_id)] for message_id in ids]
    batches += [[replace(record(ids[n]), version=1)] for n in range(0, 150, 3)]  # 50 repeats

    answers = await asyncio.gather(*(group.create_if_absent(batch) for batch in batches))

    assert sum(counting.calls) <= 150  # a repeated id is written once per group
    assert len(counting.calls) < len(batches) / 4, counting.calls
    created = {batch[0].message_id: 0 for batch in batches}
    for batch, answer in zip(batches, answers, strict=True):
        assert len(answer) == 1
        created[batch[0].message_id] += answer[0]
    assert set(created.values()) == {1}
    for message_id in ids:
        stored = await store.get(message_id)
        assert stored is not None
        assert stored.version == 0  # the first caller's record, the one told "created"


async def test_a_caller_is_answered_only_after_its_write_returned(store: StateStore) -> None:
    """Each answer comes after the write holding it: the record is readable by then."""
    group = GroupCommit(store)

    async def create_then_read(item: Record) -> bool:
        (is_new,) = await group.create_if_absent([item])
        return is_new and await store.get(item.message_id) == item

    items = [record() for _ in range(40)]
    assert all(await asyncio.gather(*(create_then_read(item) for item in items)))


async def test_a_failed_write_fails_every_caller_of_its_group_and_the_next_group_works(
    store: StateStore,
) -> None:
    """A store outage during a group's write reaches each of its callers (503 upstream);
    nothing of that group is reported created, and the next callers are served."""
    counting = CountingStore(store)
    group = GroupCommit(counting)  # type: ignore[arg-type]
    counting.fail_next = True
    failed = [record() for _ in range(10)]

    outcomes = await asyncio.gather(
        *(group.create_if_absent([item]) for item in failed), return_exceptions=True
    )

    assert all(isinstance(outcome, StoreUnavailable) for outcome in outcomes)
    retried = await asyncio.gather(*(group.create_if_absent([item]) for item in failed))
    assert retried == [[True]] * 10


async def test_a_batch_that_repeats_an_id_of_its_own_is_new_once(store: StateStore) -> None:
    """One caller giving the same id twice (a webhook batch that repeats itself)."""
    group = GroupCommit(store)
    item = record()

    assert await group.create_if_absent([item, item]) == [True, False]
    assert await group.create_if_absent([item]) == [False]
    assert await group.create_if_absent([]) == []
