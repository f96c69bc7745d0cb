"""The send's at-most-once rules around a claim whose outcome is unknown, per-recipient
pacing, and the read receipt sent from `accept`."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pyloto_corp.application.advance import Advancer
from pyloto_corp.application.handoff import gate
from pyloto_corp.application.ports import AmbiguousSend, TransientStepError
from pyloto_corp.application.step_context import Pacing
from pyloto_corp.application.steps import (
    SEND_LEASE_SECONDS,
    StepContext,
    accept,
    claim_send,
    send,
)
from pyloto_corp.domain.events import DeadLettered, ReplySent, SendClaimed, SendUnknown
from pyloto_corp.domain.outcome import CLAIM_ABANDONED, GRAPH_ERROR, NO_ANSWER, NO_MESSAGE_ID
from pyloto_corp.domain.records import HistoryEntry
from tests.unit.fakes import FakeClock, FakeOutbox, FakeQueue, FakeStore, MakeRecord, PutRecord

pytestmark = pytest.mark.anyio

RECONCILE_SECONDS = 120.0


@pytest.fixture
def reconciling(outbox: FakeOutbox, context: StepContext) -> StepContext:
    """A context whose outbox (like the Graph API's) needs time to learn of a lost send."""
    outbox.reconcile_seconds = RECONCILE_SECONDS
    return context


async def test_an_ambiguous_send_keeps_the_claim(
    put_record: PutRecord, store: FakeStore, outbox: FakeOutbox, advancer: Advancer
) -> None:
    """A send that may have reached WhatsApp leaves the record `sending` with its claim
    and its outcome noted as unknown since the claim, and fails the delivery, so a retry
    reconciles (at once: nobody holds the claim any more)."""
    record = put_record(state="queued_outbound")
    outbox.fail_with = AmbiguousSend("read timeout", why=NO_ANSWER)
    with pytest.raises(TransientStepError, match="send_unknown: read timeout"):
        await advancer.advance(record.message_id, "queued_outbound")
    stored = store.stored(record.message_id)
    assert stored.state == "sending"
    assert stored.send_started_at is not None
    assert stored.send_claimed_by is None
    assert (stored.outcome_unknown_since, stored.outcome_unknown, stored.unknown_sends) == (
        stored.send_started_at,
        NO_ANSWER,
        1,
    )
    assert [h.trigger for h in stored.history][-2:] == ["claim_send", "send_unknown"]


async def test_a_transient_failure_releases_the_claim(
    put_record: PutRecord,
    store: FakeStore,
    outbox: FakeOutbox,
    queue: FakeQueue,
    advancer: Advancer,
) -> None:
    """A send known not to have left releases the claim (back to `queued_outbound`) and
    fails the delivery, so the queue retries it with backoff and may send at once."""
    record = put_record(state="queued_outbound")
    outbox.fail_with = TransientStepError("130429")
    with pytest.raises(TransientStepError, match="release_send: 130429"):
        await advancer.advance(record.message_id, "queued_outbound")
    stored = store.stored(record.message_id)
    assert (stored.state, stored.send_started_at) == ("queued_outbound", None)
    assert [h.trigger for h in stored.history] == ["claim_send", "release_send"]
    assert queue.tasks == [], "the failed delivery is retried by its queue, not re-queued"


async def test_a_lost_send_waits_for_a_status_webhook_before_sending_again(
    put_record: PutRecord, outbox: FakeOutbox, clock: FakeClock, reconciling: StepContext
) -> None:
    """A claim whose holder is gone past its lease has an unknown outcome (noted first);
    within reconcile_seconds the step waits; only a claim reconcile_seconds old is sent
    again, once."""
    claimed_at = clock() - SEND_LEASE_SECONDS - 1
    record = put_record(
        state="sending", send_started_at=claimed_at, send_claimed_by="instance-gone"
    )
    noted = await send(record, reconciling)
    assert isinstance(noted, SendUnknown)
    assert noted.why == CLAIM_ABANDONED
    record = noted.changes(record)
    assert (record.outcome_unknown_since, record.unknown_sends) == (claimed_at, 1)
    with pytest.raises(TransientStepError, match="waiting for a status webhook") as waiting:
        await send(record, reconciling)
    assert outbox.sent == []
    # Retried at the queue's pace: each retry asks find_sent, so a status webhook arriving
    # meanwhile ends the wait early.
    assert waiting.value.retry_after == 0.0

    clock.now = claimed_at + RECONCILE_SECONDS
    claimed = await send(record, reconciling)
    assert isinstance(claimed, SendClaimed)
    fresh = replace(claimed, conversation=None)
    assert fresh == SendClaimed(clock.now, "instance-a"), "claimed anew before resending"
    assert outbox.sent == []
    outcome = await send(claimed.changes(record), replace(reconciling, claim_made_here=True))
    assert outcome.trigger == "send"
    assert len(outbox.sent) == 1


async def test_a_live_claim_of_another_delivery_is_waited_for_without_using_up_attempts(
    put_record: PutRecord, outbox: FakeOutbox, clock: FakeClock, context: StepContext
) -> None:
    """A claim another instance made 10 s ago may still be sending: the step sends nothing
    and tells the queue it is waiting (a crashed instance's claim must not use up the task's
    attempts and dead-letter a reply that was never sent)."""
    record = put_record(
        state="sending", send_started_at=clock() - 10.0, send_claimed_by="instance-other"
    )
    with pytest.raises(TransientStepError, match="another attempt is sending") as waiting:
        await send(record, context)
    assert outbox.sent == []
    assert waiting.value.waiting


async def test_a_send_confirmed_by_a_status_is_recorded_not_repeated(
    put_record: PutRecord, outbox: FakeOutbox, reconciling: StepContext
) -> None:
    """When find_sent knows the earlier send, the step records its id and sends nothing."""
    record = put_record(state="sending", send_started_at=0.0, send_claimed_by="instance-gone")
    outbox.known[record.message_id] = "wamid.EARLIER"
    outcome = await send(record, reconciling)
    assert outcome == ReplySent(outbound_message_id="wamid.EARLIER")
    assert outbox.sent == []


async def test_pacing_defers_a_customers_send_beyond_the_burst(
    put_record: PutRecord,
    store: FakeStore,
    queue: FakeQueue,
    outbox: FakeOutbox,
    context: StepContext,
    advancer: Advancer,
    clock: FakeClock,
) -> None:
    """With a burst of 2 the third reply to one customer is retried later: the claim's save
    needs a pacing token, so nothing is saved and nothing sent. Another customer is not held
    back, and the bucket refills with time."""
    paced = Advancer(
        advancer.machine, store, queue, replace(context, pacing=Pacing(per_seconds=6.0, burst=2))
    )
    records = [put_record(state="queued_outbound") for _ in range(3)]
    for record in records[:2]:
        assert await paced.advance(record.message_id, "queued_outbound") == "sent"
    with pytest.raises(TransientStepError, match="pacing") as waited:
        await paced.advance(records[2].message_id, "queued_outbound")
    assert waited.value.retry_after == pytest.approx(6.0)
    held = store.stored(records[2].message_id)
    assert (held.state, held.send_started_at, held.version) == ("queued_outbound", None, 0)
    assert len(outbox.sent) == 2

    other = put_record(state="queued_outbound")
    store.put(replace(other, inbound=replace(other.inbound, sender="5521912345678")))
    assert await paced.advance(other.message_id, "queued_outbound") == "sent"

    clock.advance(6.0)
    assert await paced.advance(records[2].message_id, "queued_outbound") == "sent"
    assert len(outbox.sent) == 4


async def test_accept_marks_the_message_read_once(
    make_record: MakeRecord, outbox: FakeOutbox, context: StepContext
) -> None:
    """A message that needs a reply is marked read (in `deduped`, where the conversation is
    known); a reaction (no reply) is not."""
    record = make_record()
    assert (await accept(record, context)).trigger == "accept"
    assert await gate(replace(record, state="deduped"), context) is None
    await accept(make_record(kind="reaction"), context)
    assert outbox.read == [record.message_id]


class BrokenReadOutbox(FakeOutbox):
    """An outbox whose read receipts always fail."""

    async def mark_read(self, message_id: str, phone_number_id: str = "") -> None:
        raise TransientStepError("graph http 503")


async def test_a_failed_read_receipt_never_fails_accept(
    make_record: MakeRecord, context: StepContext, caplog: pytest.LogCaptureFixture
) -> None:
    """mark_read failing is logged as `mark_read_failed` and the message is still accepted."""
    broken = replace(context, outbox=BrokenReadOutbox())
    assert (await accept(make_record(), broken)).trigger == "accept"
    assert await gate(make_record(state="deduped"), broken) is None
    assert "mark_read_failed" in caplog.text


async def test_a_released_send_retries_with_the_customers_name_removed(
    put_record: PutRecord, outbox: FakeOutbox, advancer: Advancer
) -> None:
    """The outbox's error may quote the customer: the retry it causes (logged by the queue,
    kept as the last failure reason) carries the text without their name."""
    record = put_record(state="queued_outbound")
    name = record.inbound.contact_name
    assert name
    outbox.fail_with = TransientStepError(f"recusado para {name}")
    with pytest.raises(TransientStepError) as raised:
        await advancer.advance(record.message_id, "queued_outbound")
    assert "release_send: recusado para" in str(raised.value)
    assert name not in str(raised.value)
    for part in name.split():
        assert part not in str(raised.value)


async def test_a_live_claim_on_the_last_attempt_is_not_dead_lettered(
    put_record: PutRecord, store: FakeStore, clock: FakeClock, advancer: Advancer
) -> None:
    """Even on the queue's last attempt, waiting for another delivery's live claim fails the
    delivery (the queue retries it) instead of dead-lettering a reply that was never sent;
    once the lease is over the send is reconciled and made."""
    record = put_record(
        state="sending", send_started_at=clock() - 5.0, send_claimed_by="instance-other"
    )
    with pytest.raises(TransientStepError, match="another attempt is sending"):
        await advancer.deliver(record.message_id, "sending", 8, 8)
    assert store.stored(record.message_id).state == "sending"

    clock.now += SEND_LEASE_SECONDS  # the claim's lease is over: reconciled, sent
    assert await advancer.deliver(record.message_id, "sending", 8, 8) == "sent"


@pytest.mark.parametrize("why", [NO_MESSAGE_ID, NO_ANSWER])
async def test_an_unknown_outcome_graph_likely_sent_is_dead_lettered_not_resent(
    why: str, put_record: PutRecord, outbox: FakeOutbox, clock: FakeClock, reconciling: StepContext
) -> None:
    """After a 200 without an id or a request left unanswered, the reconcile window passes
    without a status: the record is dead-lettered with its outcome unknown, nothing sent."""
    claimed_at = clock() - RECONCILE_SECONDS
    record = put_record(
        state="sending",
        send_started_at=claimed_at,
        outcome_unknown_since=claimed_at,
        outcome_unknown=why,
        unknown_sends=1,
    )
    outcome = await send(record, reconciling)
    assert isinstance(outcome, DeadLettered)
    assert outcome.reason.startswith("outcome unknown since ")
    assert "may already have arrived" in outcome.reason
    assert outbox.sent == []


async def test_a_graph_error_is_sent_once_more_then_never_again(
    put_record: PutRecord, outbox: FakeOutbox, clock: FakeClock, reconciling: StepContext
) -> None:
    """After a 131000 or 5xx with no status in the window the reply is claimed anew (one
    more attempt); once two sends ended unknown it is dead-lettered instead."""
    claimed_at = clock() - RECONCILE_SECONDS
    unknown = {
        "state": "sending",
        "send_started_at": claimed_at,
        "outcome_unknown_since": claimed_at,
        "outcome_unknown": GRAPH_ERROR,
    }
    once = put_record(**unknown, unknown_sends=1)
    assert isinstance(await send(once, reconciling), SendClaimed)
    twice = put_record(**unknown, unknown_sends=2)
    outcome = await send(twice, reconciling)
    assert isinstance(outcome, DeadLettered)
    assert "no more attempts" in outcome.reason
    assert outbox.sent == []


async def test_a_status_recorded_before_a_retry_of_a_released_send_is_recorded_not_resent(
    put_record: PutRecord, outbox: FakeOutbox, context: StepContext
) -> None:
    """A reply back in `queued_outbound` after a claim asks the outbox first: when a status
    names its send, the claim is taken as not fresh, so the send step reconciles."""
    earlier = [
        HistoryEntry("queued_outbound", "sending", "claim_send", 1.0, 0.1, 1),
        HistoryEntry("sending", "queued_outbound", "release_send", 2.0, 0.1, 1),
    ]
    released = put_record(state="queued_outbound", history=earlier)
    outbox.known[released.message_id] = "wamid.EARLIER"
    claim = await claim_send(released, context)
    assert not claim.fresh
    outcome = await send(claim.changes(released), context)
    assert outcome == ReplySent(outbound_message_id="wamid.EARLIER")
    assert outbox.sent == []
