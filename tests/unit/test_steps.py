"""The step of each state, run alone: the event it returns and what that records."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pyloto_corp.application.advance import Advancer
from pyloto_corp.application.handoff import gate
from pyloto_corp.application.ports import PermanentStepError
from pyloto_corp.application.step_context import BusinessNumbers
from pyloto_corp.application.steps import (
    HANDLED_TRIGGERS,
    STEPS,
    StepContext,
    accept,
    claim_send,
    queue_reply,
    send,
)
from pyloto_corp.domain.events import FellBack, Ignored, ReplyQueued, SendClaimed
from pyloto_corp.domain.records import IGNORED_KINDS, Record
from pyloto_corp.domain.replies import reply_key
from pyloto_corp.domain.results import Results
from pyloto_corp.domain.statechart import ANY_STATE
from tests.unit.fakes import FakeOutbox, FakeStore, MakeRecord, PutRecord

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("kind", sorted(IGNORED_KINDS))
async def test_notices_are_ignored(
    kind: str, make_record: MakeRecord, context: StepContext
) -> None:
    """Reactions, edits, deletions and system notices fire `ignore` and note their kind."""
    outcome = await accept(make_record(kind=kind), context)
    assert outcome == Ignored(kind=kind)
    assert outcome.trigger == "ignore"


@pytest.mark.parametrize(
    "kind", ["text", "image", "audio", "interactive", "button", "order", "unsupported"]
)
async def test_messages_needing_a_reply_are_accepted(
    kind: str, make_record: MakeRecord, context: StepContext
) -> None:
    """Everything else (unsupported included: it gets an apology) fires `accept`."""
    assert (await accept(make_record(kind=kind), context)).trigger == "accept"


@pytest.mark.parametrize("state", ["deduped", "llm1", "llm2"])
async def test_llm_steps_fall_back_while_the_llm_is_off(
    state: str, make_record: MakeRecord, context: StepContext
) -> None:
    """Without an LLM each LLM step falls back and says why."""
    outcome = await STEPS[state](make_record(state=state), context)
    assert outcome.trigger == "fall_back"
    step = {"deduped": "llm1", "llm1": "llm2", "llm2": "llm3"}[state]
    assert outcome == FellBack(step=step, reason="llm_disabled")


async def test_queue_reply_builds_the_template_reply(
    make_record: MakeRecord, context: StepContext
) -> None:
    """The queued reply is a Graph API body for the kind's template, keyed back to the record."""
    record = make_record(kind="image", state="fallback", results={"event": "price"})
    outcome = await queue_reply(record, context)
    assert isinstance(outcome, ReplyQueued)
    assert outcome.trigger == "queue_reply"
    body = outcome.reply
    assert body["to"] == record.inbound.sender
    assert body["context"] == {"message_id": record.message_id}
    assert body["biz_opaque_callback_data"] == reply_key(record.message_id)
    assert "Recebemos seu arquivo" in body["text"]["body"]
    assert outcome.changes(record).results == Results(event="price", template="media")
    assert record.results == Results(event="price"), "the step does not edit its record"


async def test_queue_reply_echoes_a_choice(make_record: MakeRecord, context: StepContext) -> None:
    """A button reply is answered with the title the customer chose."""
    record = make_record(kind="interactive", state="fallback", text="Ver horários")
    outcome = await queue_reply(record, context)
    assert isinstance(outcome, ReplyQueued)
    assert "“Ver horários”" in outcome.reply["text"]["body"]
    assert outcome.template == "choice"


@pytest.mark.parametrize("state", sorted(STEPS))
async def test_every_step_fires_a_trigger_it_declares(
    state: str, put_record: PutRecord, context: StepContext
) -> None:
    """What a step returns is in HANDLED_TRIGGERS, which the statechart is checked against."""
    record = put_record(state=state)
    outcome = await STEPS[state](record, context)
    assert outcome.trigger in HANDLED_TRIGGERS[state] | HANDLED_TRIGGERS[ANY_STATE]


async def test_the_claim_is_saved_before_the_request_leaves(
    put_record: PutRecord, store: FakeStore, outbox: FakeOutbox, advancer: Advancer
) -> None:
    """queued_outbound → sending is a version-checked save made before the request leaves;
    the delivery that made it sends at once, with nothing to reconcile."""
    record = put_record(state="queued_outbound", version=4)
    outbox.store = store
    assert await advancer.advance(record.message_id, "queued_outbound") == "sent"
    (at_send,) = outbox.on_send
    assert at_send is not None
    assert (at_send.state, at_send.version) == ("sending", 5)
    assert at_send.send_claimed_by == "instance-a"
    assert outbox.lookups == [], "a claim made in this delivery has no earlier send"
    final = store.stored(record.message_id)
    assert [(h.source, h.dest, h.trigger) for h in final.history] == [
        ("queued_outbound", "sending", "claim_send"),
        ("sending", "sent", "send"),
    ]
    assert final.version == 6


async def test_a_claim_carried_over_from_queued_outbound_is_reconciled_not_trusted(
    put_record: PutRecord, store: FakeStore, outbox: FakeOutbox, advancer: Advancer
) -> None:
    """A record stored mid-send while the claim was kept in `queued_outbound` keeps that
    claim into `sending`, and the outbox's record of the earlier send is used: nothing is
    sent again."""
    record = put_record(
        state="queued_outbound", send_started_at=0.0, send_claimed_by="instance-gone"
    )
    outbox.known[record.message_id] = "wamid.EARLIER"
    assert await advancer.advance(record.message_id, "queued_outbound") == "sent"
    assert outbox.sent == []
    final = store.stored(record.message_id)
    assert final.outbound_message_id == "wamid.EARLIER"
    assert final.send_claimed_by == "instance-gone"


async def test_claim_send_claims_now_for_this_instance(
    make_record: MakeRecord, context: StepContext
) -> None:
    """The claim names the time and this instance; applied, it sets the record's claim."""
    record = make_record(state="queued_outbound")
    event = await claim_send(record, context)
    assert replace(event, conversation=None) == SendClaimed(context.clock(), "instance-a")
    # A bot reply's claim expects the conversation still in `bot` (no talking over a person).
    assert event.conversation is not None
    assert (event.conversation.expect_mode, event.conversation.mode) == ("bot", None)
    claimed = event.changes(record)
    assert (claimed.send_started_at, claimed.send_claimed_by) == (context.clock(), "instance-a")


async def test_a_message_without_a_sender_is_kept_and_ignored(
    make_record: MakeRecord, context: StepContext
) -> None:
    """With neither `from` nor a user id there is nobody to answer: `ignore`, with the reason."""
    record = make_record()
    record = replace(record, inbound=replace(record.inbound, sender=""))
    outcome = await accept(record, context)
    assert outcome == Ignored(reason="no_sender")
    assert outcome.changes(record).results == Results(ignored_reason="no_sender")


# The business numbers of these tests: `inbound()` writes to the first one.
OURS = "106540352242922"
SECOND = "106540352242933"
NUMBERS = BusinessNumbers(OURS, frozenset({SECOND}))


def written_to(record: Record, number: str) -> Record:
    """`record` as if its customer had written to the business number `number`."""
    return replace(record, inbound=replace(record.inbound, phone_number_id=number))


@pytest.mark.parametrize(("number", "sender"), [(OURS, OURS), (SECOND, SECOND), ("", OURS)])
async def test_the_read_receipt_goes_through_the_number_written_to(
    number: str, sender: str, make_record: MakeRecord, context: StepContext, outbox: FakeOutbox
) -> None:
    """A message to either configured number is marked read through that number; one that
    names none (an older record, `pyloto simulate`) through the default number."""
    ctx = replace(context, numbers=NUMBERS)
    record = written_to(make_record(), number)
    assert (await accept(record, ctx)).trigger == "accept"
    assert outbox.read_from == []  # read in `deduped`, once the conversation is known
    assert await gate(replace(record, state="deduped"), ctx) is None
    assert outbox.read_from == [sender]


async def test_a_message_to_another_number_is_ignored_without_a_read_receipt(
    make_record: MakeRecord, context: StepContext, outbox: FakeOutbox
) -> None:
    """A number the app receives webhooks for but this service does not answer for: the
    record ends `ignored` with its reason, and nothing is sent from any number."""
    record = written_to(make_record(), "999999999999999")
    outcome = await accept(record, replace(context, numbers=NUMBERS))
    assert outcome == Ignored(reason="unknown_business_number")
    assert outcome.changes(record).results.ignored_reason == "unknown_business_number"
    assert outbox.read == []


async def test_without_configured_numbers_any_number_is_answered(
    make_record: MakeRecord, context: StepContext, outbox: FakeOutbox
) -> None:
    """A dry run without WHATSAPP_PHONE_NUMBER_ID answers whatever number was written to."""
    record = written_to(make_record(), "999999999999999")
    assert (await accept(record, context)).trigger == "accept"
    assert await gate(replace(record, state="deduped"), context) is None
    assert outbox.read_from == ["999999999999999"]


@pytest.mark.parametrize(("number", "sender"), [(SECOND, SECOND), ("", OURS)])
async def test_the_reply_is_sent_from_the_number_written_to(
    number: str, sender: str, make_record: MakeRecord, context: StepContext, outbox: FakeOutbox
) -> None:
    """The send names the business number the customer wrote to (the default for none)."""
    record = written_to(make_record(state="sending", send_started_at=0.0), number)
    ctx = replace(context, numbers=NUMBERS, claim_made_here=True)
    assert (await send(record, ctx)).trigger == "send"
    assert outbox.sent_from == [sender]


async def test_a_reply_for_a_number_no_longer_configured_is_never_sent(
    make_record: MakeRecord, context: StepContext, outbox: FakeOutbox
) -> None:
    """Accepted while the number was ours, sent after it was removed: dead-lettered, never
    sent from another number."""
    record = written_to(make_record(state="sending", send_started_at=0.0), "999999999999999")
    with pytest.raises(PermanentStepError, match="no longer configured"):
        await send(record, replace(context, numbers=NUMBERS, claim_made_here=True))
    assert outbox.sent_from == []


async def test_a_welcome_request_is_greeted_by_its_template_without_the_llm(
    make_record: MakeRecord, context: StepContext
) -> None:
    """`request_welcome` (no body) falls back as `welcome` with the LLM off too (not as
    `llm_disabled`), then gets the welcome template naming the business."""
    record = make_record(kind="request_welcome", state="deduped", text=None)
    outcome = await STEPS["deduped"](record, context)
    assert outcome == FellBack(step="llm1", reason="welcome")
    queued = await queue_reply(replace(record, state="fallback"), context)
    assert queued.template == "welcome"
    assert "nossa empresa" in queued.reply["text"]["body"]
