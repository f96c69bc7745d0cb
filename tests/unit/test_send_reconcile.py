"""The send step's at-most-once rules around a claim whose outcome is unknown, per-recipient
pacing, and the read receipt sent from `accept`."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pyloto_corp.application.ports import AmbiguousSend, TransientStepError
from pyloto_corp.application.step_context import Pacing
from pyloto_corp.application.steps import SEND_LEASE_SECONDS, StepContext, accept, send
from pyloto_corp.domain.events import ReplySent
from tests.unit.fakes import FakeClock, FakeOutbox, FakeStore, MakeRecord

pytestmark = pytest.mark.anyio

RECONCILE_SECONDS = 120.0


@pytest.fixture
def reconciling(outbox: FakeOutbox, context: StepContext) -> StepContext:
    """A context whose outbox (like the Graph API's) needs time to learn of a lost send."""
    outbox.reconcile_seconds = RECONCILE_SECONDS
    return context


async def test_an_ambiguous_send_keeps_the_claim(
    make_record: MakeRecord, store: FakeStore, outbox: FakeOutbox, context: StepContext
) -> None:
    """A send that may have reached WhatsApp leaves the claim saved, so a retry reconciles."""
    record = make_record(state="queued_outbound")
    store.put(record)
    outbox.fail_with = AmbiguousSend("read timeout")
    with pytest.raises(AmbiguousSend):
        await send(record, context)
    assert store.stored(record.message_id).send_claimed_by == "instance-a"


async def test_a_transient_failure_releases_the_claim(
    make_record: MakeRecord, store: FakeStore, outbox: FakeOutbox, context: StepContext
) -> None:
    """A send known not to have left releases the claim, so the retry may send at once."""
    record = make_record(state="queued_outbound")
    store.put(record)
    outbox.fail_with = TransientStepError("130429")
    with pytest.raises(TransientStepError):
        await send(record, context)
    assert store.stored(record.message_id).send_started_at is None


async def test_a_lost_send_waits_for_a_status_webhook_before_sending_again(
    make_record: MakeRecord,
    store: FakeStore,
    outbox: FakeOutbox,
    clock: FakeClock,
    reconciling: StepContext,
) -> None:
    """Past the claim's lease but within reconcile_seconds the step waits; only a claim
    reconcile_seconds old is sent again, once."""
    claimed_at = clock() - SEND_LEASE_SECONDS - 1
    record = make_record(
        state="queued_outbound", send_started_at=claimed_at, send_claimed_by="instance-gone"
    )
    store.put(record)
    with pytest.raises(TransientStepError, match="waiting for a status webhook"):
        await send(record, reconciling)
    assert outbox.sent == []

    clock.now = claimed_at + RECONCILE_SECONDS
    outcome = await send(record, reconciling)
    assert outcome.trigger == "send"
    assert len(outbox.sent) == 1


async def test_a_send_confirmed_by_a_status_is_recorded_not_repeated(
    make_record: MakeRecord, store: FakeStore, outbox: FakeOutbox, reconciling: StepContext
) -> None:
    """When find_sent knows the earlier send, the step records its id and sends nothing."""
    record = make_record(
        state="queued_outbound", send_started_at=0.0, send_claimed_by="instance-gone"
    )
    store.put(record)
    outbox.known[record.message_id] = "wamid.EARLIER"
    outcome = await send(record, reconciling)
    assert outcome == ReplySent(outbound_message_id="wamid.EARLIER")
    assert outbox.sent == []


async def test_pacing_defers_a_customers_send_beyond_the_burst(
    make_record: MakeRecord, outbox: FakeOutbox, store: FakeStore, context: StepContext
) -> None:
    """With a burst of 2 the third reply to one customer is retried later (nothing sent, no
    claim taken); another customer is not held back, and the slot refills with time."""
    paced = replace(context, pacing=Pacing(per_seconds=6.0, burst=2))
    records = [make_record(state="queued_outbound") for _ in range(3)]
    for record in records:
        store.put(record)
    for record in records[:2]:
        await send(record, paced)
    with pytest.raises(TransientStepError, match="pacing"):
        await send(records[2], paced)
    assert len(outbox.sent) == 2
    assert store.stored(records[2].message_id).send_started_at is None

    other = make_record(state="queued_outbound")
    other = replace(other, inbound=replace(other.inbound, sender="5521912345678"))
    store.put(other)
    await send(other, paced)
    assert len(outbox.sent) == 3

    later = replace(paced, clock=lambda: context.clock() + 6.0)
    await send(records[2], later)
    assert len(outbox.sent) == 4


async def test_accept_marks_the_message_read_once(
    make_record: MakeRecord, outbox: FakeOutbox, context: StepContext
) -> None:
    """A message that needs a reply is marked read; a reaction (no reply) is not."""
    record = make_record()
    assert (await accept(record, context)).trigger == "accept"
    await accept(make_record(kind="reaction"), context)
    assert outbox.read == [record.message_id]


class BrokenReadOutbox(FakeOutbox):
    """An outbox whose read receipts always fail."""

    async def mark_read(self, message_id: str) -> None:
        raise TransientStepError("graph http 503")


async def test_a_failed_read_receipt_never_fails_accept(
    make_record: MakeRecord, context: StepContext, caplog: pytest.LogCaptureFixture
) -> None:
    """mark_read failing is logged as `mark_read_failed` and the message is still accepted."""
    broken = replace(context, outbox=BrokenReadOutbox())
    assert (await accept(make_record(), broken)).trigger == "accept"
    assert "mark_read_failed" in caplog.text
