"""Advancer when the store fails before answering a write (Redis killed mid-step): the task's
next delivery in the same process settles what the failed one left behind."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pyloto_corp.application.advance import Advancer
from pyloto_corp.application.ports import StoreUnavailable, Task, TransientStepError
from pyloto_corp.application.steps import StepContext
from pyloto_corp.domain.machine import LifecycleMachine
from pyloto_corp.domain.records import Record
from tests.unit.fakes import FakeQueue, FakeStore, MakeRecord

pytestmark = pytest.mark.anyio


class UnansweredStore(FakeStore):
    """A store whose next save is applied but unanswered, or whose next release is lost."""

    def __init__(self) -> None:
        super().__init__()
        self.lose_save_answer = False
        self.fail_release = 0  # how many releases in a row fail

    async def save(self, record: Record, expected_version: int) -> bool:
        saved = await super().save(record, expected_version)
        if self.lose_save_answer:
            self.lose_save_answer = False
            raise StoreUnavailable("redis: connection closed before the answer")
        return saved

    async def release_lease(self, name: str, owner: str) -> None:
        if self.fail_release:
            self.fail_release -= 1
            raise StoreUnavailable("redis: connection refused")
        await super().release_lease(name, owner)


@pytest.fixture
def unanswered() -> UnansweredStore:
    """A fresh store that fails as told."""
    return UnansweredStore()


@pytest.fixture
def advancer_on(
    machine: LifecycleMachine, unanswered: UnansweredStore, queue: FakeQueue, context: StepContext
) -> Advancer:
    """An advancer on that store, as one process among several."""
    ctx = replace(context, store=unanswered, instance_id="a")
    return Advancer(machine, unanswered, queue, ctx)


async def test_a_lease_left_by_a_failed_release_is_freed_by_the_next_delivery(
    advancer_on: Advancer, unanswered: UnansweredStore, queue: FakeQueue, make_record: MakeRecord
) -> None:
    """The step ran but its lease could not be given back, neither with its save nor on its
    own afterwards: the retry here does not wait for the lease to expire (it would burn its
    attempts on "running in another delivery")."""
    record = make_record()
    unanswered.put(record)
    unanswered.fail_release = 2
    with pytest.raises(StoreUnavailable):
        await advancer_on.advance(record.message_id, "received")
    assert list(unanswered.leases) == [f"{record.message_id}:received"], "left behind"

    assert await advancer_on.advance(record.message_id, "received") == "stale"
    assert unanswered.leases == {}
    assert queue.tasks == [Task(record.message_id, "deduped", "inbound")], "queued once"


async def test_another_deliverys_lease_is_still_respected(
    advancer_on: Advancer, unanswered: UnansweredStore, make_record: MakeRecord
) -> None:
    """Only this process's own unreleased lease is freed, never one another delivery holds."""
    record = make_record()
    unanswered.put(record)
    lease = f"{record.message_id}:received"
    assert (await unanswered.lease_step(lease, "elsewhere", 60, record.message_id)).taken
    with pytest.raises(TransientStepError):
        await advancer_on.advance(record.message_id, "received")
    assert unanswered.leases == {f"{record.message_id}:received": "elsewhere"}


async def test_a_save_applied_but_unanswered_queues_the_next_step_on_retry(
    advancer_on: Advancer, unanswered: UnansweredStore, queue: FakeQueue, make_record: MakeRecord
) -> None:
    """The transition was saved but its answer lost, so no next task was queued: the retry
    finds the record exactly as it tried to save it and queues that step; later deliveries
    of the old task are plain no-ops."""
    record = make_record()
    unanswered.put(record)
    unanswered.lose_save_answer = True
    with pytest.raises(StoreUnavailable):
        await advancer_on.advance(record.message_id, "received")
    assert unanswered.stored(record.message_id).state == "deduped"
    assert queue.tasks == []

    assert await advancer_on.advance(record.message_id, "received") == "stale"
    assert queue.tasks == [Task(record.message_id, "deduped", "inbound")]
    assert await advancer_on.advance(record.message_id, "received") == "stale"
    assert len(queue.tasks) == 1, "put back again, and deduplicated by the queue"
