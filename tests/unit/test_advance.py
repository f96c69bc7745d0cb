"""Advancer: one idempotent transition per task, sends at most once, dead letters with a reason."""

from __future__ import annotations

import logging

import anyio
import pytest

from pyloto_corp.application.advance import Advancer
from pyloto_corp.application.ports import PermanentStepError, Task, TransientStepError
from pyloto_corp.application.steps import SEND_LEASE_SECONDS, StepContext
from pyloto_corp.application.sweeper import sweep
from pyloto_corp.domain.machine import LifecycleMachine
from pyloto_corp.domain.privacy import message_ref
from pyloto_corp.domain.records import Record
from pyloto_corp.domain.results import Results
from pyloto_corp.domain.statechart import Statechart
from tests.unit.fakes import (
    TEMPLATES,
    FakeClock,
    FakeOutbox,
    FakeQueue,
    FakeStore,
    MakeRecord,
    PutRecord,
)

pytestmark = pytest.mark.anyio


async def test_unknown_record_is_answered_unknown(
    advancer: Advancer, queue: FakeQueue, caplog: pytest.LogCaptureFixture
) -> None:
    """A task for a record that does not exist does nothing and logs only a hashed reference."""
    caplog.set_level(logging.WARNING)
    assert await advancer.advance("wamid.NOSUCHRECORD", "received") == "unknown"
    assert queue.tasks == []
    (logged,) = [r for r in caplog.records if r.getMessage() == "task_for_unknown_record"]
    assert logged.ref == message_ref("wamid.NOSUCHRECORD")  # type: ignore[attr-defined]
    assert "wamid.NOSUCHRECORD" not in caplog.text


async def test_task_for_another_state_is_a_stale_noop(
    advancer: Advancer,
    store: FakeStore,
    queue: FakeQueue,
    outbox: FakeOutbox,
    put_record: PutRecord,
) -> None:
    """A record that already moved on is left as it is (no save, no send); its current step
    is put back on the queue, in case the delivery that moved it died before queuing it."""
    record = put_record(state="queued_outbound", version=3)
    for expected_state in ("received", "fallback", "sent"):
        assert await advancer.advance(record.message_id, expected_state) == "stale"
    assert store.saves == []
    assert queue.tasks == [Task(record.message_id, "queued_outbound", "outbound")]
    assert outbox.sent == []
    assert store.stored(record.message_id) == record


async def test_redelivered_task_runs_its_step_once(
    advancer: Advancer, store: FakeStore, queue: FakeQueue, put_record: PutRecord
) -> None:
    """The same task delivered twice moves the record once and queues one next task."""
    record = put_record()
    assert await advancer.advance(record.message_id, "received") == "deduped"
    assert await advancer.advance(record.message_id, "received") == "stale"
    assert len(store.stored(record.message_id).history) == 1
    assert queue.tasks == [Task(record.message_id, "deduped", "inbound")]


async def test_each_transition_appends_history_and_bumps_version(
    advancer: Advancer, store: FakeStore, queue: FakeQueue, clock: FakeClock, put_record: PutRecord
) -> None:
    """Every transition adds one history entry (from, to, trigger, time, attempt) and version+1."""
    record = put_record()
    clock.advance(2.0)
    await advancer.advance(record.message_id, "received", attempt=3)
    moved = store.stored(record.message_id)
    assert moved.state == "deduped"
    assert moved.version == record.version + 1
    assert moved.updated_at == clock()
    (entry,) = moved.history
    assert (entry.source, entry.dest, entry.trigger, entry.attempt) == (
        "received",
        "deduped",
        "accept",
        3,
    )
    assert entry.at == clock()
    assert moved.attempts == {"received": 3}
    clock.advance(1.0)
    await advancer.advance(record.message_id, "deduped")
    again = store.stored(record.message_id)
    assert again.version == record.version + 2
    assert [(h.source, h.dest) for h in again.history] == [
        ("received", "deduped"),
        ("deduped", "fallback"),
    ]
    assert again.fallback_reason == "llm_disabled"


async def test_text_message_runs_to_sent_through_both_queues(
    advancer: Advancer,
    store: FakeStore,
    queue: FakeQueue,
    outbox: FakeOutbox,
    put_record: PutRecord,
) -> None:
    """A text walks received → deduped → fallback → queued_outbound → sending → sent; the
    send is outbound and runs in the delivery that claimed it."""
    record = put_record()
    queue.tasks.append(Task(record.message_id, "received", "inbound"))
    seen: list[Task] = []
    outcomes = []
    while queue.tasks:
        task = queue.tasks.pop(0)
        seen.append(task)
        outcomes.append(await advancer.advance(task.message_id, task.state))
    assert outcomes == ["deduped", "fallback", "queued_outbound", "sent"]
    assert [(t.state, t.queue) for t in seen] == [
        ("received", "inbound"),
        ("deduped", "inbound"),
        ("fallback", "inbound"),
        ("queued_outbound", "outbound"),
    ]
    final = store.stored(record.message_id)
    assert final.outbound_message_id == "wamid.OUT0001"
    assert final.results == Results(template="text", fallback_step="llm1")
    assert final.version == 5  # four transitions and the send claim
    assert outbox.sent == [final.reply]


async def test_reaction_ends_ignored_without_a_reply(
    advancer: Advancer,
    store: FakeStore,
    queue: FakeQueue,
    outbox: FakeOutbox,
    put_record: PutRecord,
) -> None:
    """A reaction is ignored: terminal, no next task, nothing sent."""
    record = put_record(kind="reaction", text="👍")
    assert await advancer.advance(record.message_id, "received") == "ignored"
    assert queue.tasks == []
    assert outbox.sent == []
    assert store.stored(record.message_id).results == Results(ignored_kind="reaction")


async def test_lost_version_race_in_commit_is_stale(
    machine: LifecycleMachine,
    queue: FakeQueue,
    context: StepContext,
    make_record: MakeRecord,
) -> None:
    """If another writer saved first, the commit is refused and no next task is queued."""

    class RacedStore(FakeStore):
        async def save(self, record: Record, expected_version: int) -> bool:
            stored = self.records[record.message_id]
            stored.version += 1  # someone else's save lands first
            return await super().save(record, expected_version)

    store = RacedStore()
    record = make_record()
    store.put(record)
    advancer = Advancer(machine, store, queue, context)
    assert await advancer.advance(record.message_id, "received") == "stale"
    assert queue.tasks == []
    assert store.stored(record.message_id).state == "received"


async def test_concurrent_duplicate_send_tasks_send_once(
    advancer: Advancer, store: FakeStore, outbox: FakeOutbox, put_record: PutRecord
) -> None:
    """Two deliveries of the send task at once: one sends, the other is told to retry later
    (the step's lease is taken), and its retry finds the record sent: a no-op."""
    record = put_record(state="queued_outbound")
    outcomes: list[str] = []

    async def run() -> None:
        try:
            outcomes.append(await advancer.advance(record.message_id, "queued_outbound"))
        except TransientStepError:
            outcomes.append("retry later")

    async with anyio.create_task_group() as group:
        group.start_soon(run)
        group.start_soon(run)
    assert sorted(outcomes) == ["retry later", "sent"]
    assert await advancer.advance(record.message_id, "queued_outbound") == "stale"
    assert len(outbox.sent) == 1
    assert store.stored(record.message_id).state == "sent"
    assert store.leases == {}, "every lease was given back"


async def test_send_claims_before_the_request_leaves(
    advancer: Advancer,
    store: FakeStore,
    outbox: FakeOutbox,
    clock: FakeClock,
    put_record: PutRecord,
) -> None:
    """When the outbox is called the store already holds this instance's claim (`sending`),
    one version up."""
    record = put_record(state="queued_outbound", version=7)
    assert await advancer.advance(record.message_id, "queued_outbound") == "sent"
    (at_send,) = outbox.on_send
    assert at_send is not None
    assert (at_send.state, at_send.version) == ("sending", 8)
    assert (at_send.send_started_at, at_send.send_claimed_by) == (clock(), "instance-a")
    final = store.stored(record.message_id)
    assert (final.state, final.version) == ("sent", 9)
    assert [s.version for s in store.saves] == [8, 9]


@pytest.mark.parametrize("owner", ["instance-b", "instance-a"])
async def test_live_claim_makes_the_task_retry_later(
    advancer: Advancer,
    store: FakeStore,
    outbox: FakeOutbox,
    clock: FakeClock,
    put_record: PutRecord,
    owner: str,
) -> None:
    """A send claimed within the lease (by any task) is not repeated: TransientStepError."""
    record = put_record(
        state="sending",
        send_started_at=clock() - (SEND_LEASE_SECONDS - 1),
        send_claimed_by=owner,
        version=2,
    )
    with pytest.raises(TransientStepError):
        await advancer.advance(record.message_id, "sending")
    assert outbox.sent == []
    assert store.stored(record.message_id) == record


@pytest.fixture
def expired_claim(put_record: PutRecord, clock: FakeClock) -> Record:
    """A stored record in `sending` whose claim, by another instance, is past its lease."""
    return put_record(
        state="sending",
        send_started_at=clock() - (SEND_LEASE_SECONDS + 1),
        send_claimed_by="instance-b",
    )


async def test_expired_claim_that_was_sent_is_reconciled_not_resent(
    advancer: Advancer, store: FakeStore, outbox: FakeOutbox, expired_claim: Record
) -> None:
    """After the lease the step asks the outbox; a send it knows of completes the record."""
    record = expired_claim
    outbox.known[record.message_id] = "wamid.EARLIER"
    assert await advancer.advance(record.message_id, "sending") == "sent"
    assert outbox.lookups == [record.message_id]
    assert outbox.sent == []
    assert store.stored(record.message_id).outbound_message_id == "wamid.EARLIER"


async def test_expired_claim_that_never_sent_sends_once(
    advancer: Advancer, store: FakeStore, outbox: FakeOutbox, expired_claim: Record
) -> None:
    """After the lease, with no earlier send known, this task claims anew (a saved
    transition) and sends."""
    record = expired_claim
    assert await advancer.advance(record.message_id, "sending") == "sent"
    assert outbox.lookups == [record.message_id]
    assert len(outbox.sent) == 1
    assert store.stored(record.message_id).send_claimed_by == "instance-a"


async def test_live_claim_already_sent_is_reconciled(
    advancer: Advancer, outbox: FakeOutbox, clock: FakeClock, put_record: PutRecord
) -> None:
    """Within the lease, a send the outbox already knows completes the record at once."""
    record = put_record(state="sending", send_started_at=clock() - 1, send_claimed_by="instance-b")
    outbox.known[record.message_id] = "wamid.EARLIER"
    assert await advancer.advance(record.message_id, "sending") == "sent"
    assert outbox.sent == []


async def test_sole_instance_takes_over_its_crashed_predecessors_claim(
    machine: LifecycleMachine,
    store: FakeStore,
    queue: FakeQueue,
    outbox: FakeOutbox,
    clock: FakeClock,
    put_record: PutRecord,
) -> None:
    """With an exclusive store, a claim by another (dead) process is taken over at once."""
    context = StepContext(
        store=store,
        outbox=outbox,
        clock=clock,
        templates=TEMPLATES,
        instance_id="new-process",
        sole_instance=True,
    )
    advancer = Advancer(machine, store, queue, context)
    record = put_record(state="sending", send_started_at=clock() - 1, send_claimed_by="old-process")
    assert await advancer.advance(record.message_id, "sending") == "sent"
    assert len(outbox.sent) == 1
    mine = put_record(state="sending", send_started_at=clock() - 1, send_claimed_by="new-process")
    with pytest.raises(TransientStepError):
        await advancer.advance(mine.message_id, "sending")


async def test_transient_send_failure_releases_the_claim(
    advancer: Advancer, store: FakeStore, outbox: FakeOutbox, put_record: PutRecord
) -> None:
    """An outbox error that sent nothing releases the claim, so the retry sends at once."""
    record = put_record(state="queued_outbound")
    outbox.fail_with = TransientStepError("131000 try again")
    with pytest.raises(TransientStepError):
        await advancer.advance(record.message_id, "queued_outbound")
    released = store.stored(record.message_id)
    assert released.state == "queued_outbound"
    assert (released.send_started_at, released.send_claimed_by) == (None, None)
    assert released.version == record.version + 2
    outbox.fail_with = None
    assert await advancer.advance(record.message_id, "queued_outbound") == "sent"
    assert len(outbox.sent) == 1


async def test_permanent_send_failure_dead_letters(
    advancer: Advancer,
    store: FakeStore,
    queue: FakeQueue,
    outbox: FakeOutbox,
    put_record: PutRecord,
) -> None:
    """A permanent outbox error moves the record to failed with the reason; nothing is sent."""
    record = put_record(state="queued_outbound")
    outbox.fail_with = PermanentStepError("131026 message undeliverable")
    assert await advancer.advance(record.message_id, "queued_outbound") == "failed"
    failed = store.stored(record.message_id)
    assert failed.state == "failed"
    assert failed.failure_reason == "permanent: 131026 message undeliverable"
    assert failed.history[-1].trigger == "dead_letter"
    assert outbox.sent == []
    assert queue.tasks == []


async def test_dead_letter_moves_to_failed_with_the_reason(
    advancer: Advancer, store: FakeStore, queue: FakeQueue, put_record: PutRecord
) -> None:
    """Dead-lettering records the reason, a history entry and a new version; no task follows."""
    record = put_record(state="llm1", version=4)
    assert await advancer.dead_letter(record.message_id, "llm1", "out of attempts (10): Timeout")
    failed = store.stored(record.message_id)
    assert failed.state == "failed"
    assert failed.failure_reason == "out of attempts (10): Timeout"
    assert failed.version == 5
    assert [(h.source, h.dest, h.trigger) for h in failed.history] == [
        ("llm1", "failed", "dead_letter")
    ]
    assert queue.tasks == []


async def test_dead_letter_of_a_record_that_moved_on_is_refused(
    advancer: Advancer, store: FakeStore, put_record: PutRecord
) -> None:
    """A late dead letter for a step the record has passed changes nothing."""
    record = put_record(state="llm2")
    assert not await advancer.dead_letter(record.message_id, "llm1", "out of attempts")
    assert not await advancer.dead_letter("wamid.NOSUCHRECORD", "llm1", "out of attempts")
    assert store.stored(record.message_id) == record


async def test_sweep_requeues_stuck_open_records_to_their_queue(
    store: FakeStore,
    queue: FakeQueue,
    clock: FakeClock,
    chart: Statechart,
    make_record: MakeRecord,
) -> None:
    """Open records untouched past the deadline are queued again; recent and finished ones not."""
    stuck = make_record(state="queued_outbound")
    early = make_record(state="llm1")
    done = make_record(state="sent")
    for record in (stuck, early, done):
        store.put(record)
    clock.advance(1000)
    recent = make_record(state="deduped")
    store.put(recent)
    result = await sweep(store, queue, chart, clock, stuck_after_seconds=900, retention_seconds=1e9)
    assert result.requeued == 2
    generation = f"sweep-{clock():.0f}"  # a re-queue a deduplicating queue still accepts
    assert sorted(queue.tasks, key=lambda t: t.state) == [
        Task(early.message_id, "llm1", "inbound", generation=generation),
        Task(stuck.message_id, "queued_outbound", "outbound", generation=generation),
    ]


def test_the_next_task_carries_the_records_trace(
    advancer: Advancer, make_record: MakeRecord
) -> None:
    """A record's trace context travels with its tasks (as the `traceparent` header)."""
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    record = make_record(state="llm1", trace_context={"traceparent": parent})
    task = advancer.task_for(record)
    assert task is not None
    assert task.traceparent == parent
    assert advancer.task_for(make_record(state="llm1")).traceparent is None  # type: ignore[union-attr]
