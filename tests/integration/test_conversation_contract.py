"""The conversation half of the StateStore contract: every store adapter, and the unit
tests' FakeStore, keeps customers' conversations alike (the rule is
`domain.conversation.apply_write`; the Redis scripts apply it in Lua)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from pyloto_corp.application.ports import (
    CustomerRequest,
    LeaseHold,
    StateStore,
    StepCommit,
    Writes,
)
from pyloto_corp.domain.conversation import (
    AUDIT_KEPT,
    BOT,
    HUMAN,
    WAITING_HUMAN,
    Conversation,
    apply_write,
)
from pyloto_corp.domain.records import Record, StatusUpdate
from pyloto_corp.domain.writes import ConversationWrite
from tests.integration.factories import record
from tests.integration.test_store_contract import store_backend  # noqa: F401 (fixture)

pytestmark = pytest.mark.anyio

NOW = 1_732_500_000.0


def _key() -> str:
    return f"{random.getrandbits(128):032x}"


async def _accept(
    store: StateStore, user_key: str, at: float = NOW, write: ConversationWrite | None = None
) -> tuple[Record, bool, bool]:
    """An accept's save: the customer resolved from `user_key` and the conversation written
    under the key the save resolves (`key=''`), as the accept step writes it."""
    stored = record(created_at=at)
    await store.create_if_absent([stored])
    accepted = replace(stored, state="deduped", version=1)
    conversation = write or ConversationWrite(customer_at=at, message_id=stored.message_id)
    writes = Writes(customer=CustomerRequest(None, user_key), conversation=conversation)
    lease = LeaseHold(f"{stored.message_id}:received", "me")
    done = await store.finish_step(StepCommit(accepted, 0, lease, writes=writes))
    loaded = await store.get(stored.message_id)
    assert loaded is not None
    return loaded, done.saved, done.mode_changed


async def test_a_missing_conversation_is_none(store: StateStore) -> None:
    assert await store.get_conversation(_key()) is None


async def test_a_change_makes_the_conversation_and_moves_its_mode(store: StateStore) -> None:
    key = _key()
    write = ConversationWrite(
        expect_mode=BOT, mode=WAITING_HUMAN, reason="keyword", at=NOW, audit=("pyloto", "asked")
    )
    changed = await store.change_conversation(key, write)
    assert changed is not None
    assert (changed.mode, changed.reason, changed.since, changed.version) == (
        WAITING_HUMAN,
        "keyword",
        NOW,
        1,
    )
    stored = await store.get_conversation(key)
    assert stored == changed
    assert stored is not None
    assert [(e.who, e.action, e.at) for e in stored.audit] == [("pyloto", "asked", NOW)]


async def test_a_change_expecting_another_mode_writes_nothing(store: StateStore) -> None:
    key = _key()
    await store.change_conversation(
        key, ConversationWrite(mode=HUMAN, owner="ana", reason="operator_takeover", at=NOW)
    )
    refused = ConversationWrite(
        expect_mode=BOT, mode=WAITING_HUMAN, reason="keyword", at=NOW + 5, audit=("x", "y")
    )
    assert await store.change_conversation(key, refused) is None
    stored = await store.get_conversation(key)
    assert stored is not None
    assert (stored.mode, stored.owner, stored.version, len(stored.audit)) == (HUMAN, "ana", 1, 0)


async def test_the_newest_customer_message_moves_the_window(store: StateStore) -> None:
    key = _key()
    await store.change_conversation(key, ConversationWrite(customer_at=NOW, message_id="wamid.B"))
    # An older message delivered late does not move the window back; it is the latest
    # message accepted all the same.
    await store.change_conversation(
        key, ConversationWrite(customer_at=NOW - 100, message_id="wamid.A")
    )
    stored = await store.get_conversation(key)
    assert stored is not None
    assert (stored.customer_at, stored.last_message) == (NOW, "wamid.A")
    assert stored.window_closes_at == NOW + 24 * 3600
    await store.change_conversation(
        key, ConversationWrite(customer_at=NOW + 7.5, message_id="wamid.C")
    )
    stored = await store.get_conversation(key)
    assert stored is not None
    assert (stored.customer_at, stored.last_message, stored.mode) == (NOW + 7.5, "wamid.C", BOT)


async def test_agent_activity_and_the_audit_trail_is_bounded(store: StateStore) -> None:
    key = _key()
    for n in range(AUDIT_KEPT + 3):
        write = ConversationWrite(agent_activity=True, at=NOW + n, audit=("ana", f"reply {n}"))
        await store.change_conversation(key, write)
    stored = await store.get_conversation(key)
    assert stored is not None
    assert stored.agent_at == NOW + AUDIT_KEPT + 2
    assert len(stored.audit) == AUDIT_KEPT
    assert stored.audit[0].action == "reply 3"
    assert stored.audit[-1].action == f"reply {AUDIT_KEPT + 2}"


async def test_conversations_are_listed_by_mode_longest_waiting_first(store: StateStore) -> None:
    keys = [_key() for _ in range(4)]
    modes = [WAITING_HUMAN, HUMAN, WAITING_HUMAN, BOT]
    for n, (key, mode) in enumerate(zip(keys, modes, strict=True)):
        # Written newest first: the listing orders by `since`, not by write.
        await store.change_conversation(key, ConversationWrite(mode=mode, at=NOW - n))
    waiting = await store.list_conversations(WAITING_HUMAN, 10)
    assert [c.key for c in waiting if c.key in keys] == [keys[2], keys[0]]
    assert [c.key for c in await store.list_conversations(HUMAN, 10) if c.key in keys] == [keys[1]]
    everyone = [c.key for c in await store.list_conversations(None, 100) if c.key in keys]
    assert everyone == [keys[3], keys[2], keys[1], keys[0]]
    assert len(await store.list_conversations(WAITING_HUMAN, 1)) == 1
    # A conversation moving out of a mode leaves its listing.
    await store.change_conversation(keys[0], ConversationWrite(mode=BOT, at=NOW + 1))
    assert keys[0] not in [c.key for c in await store.list_conversations(WAITING_HUMAN, 10)]


async def test_an_accept_writes_the_conversation_of_the_customer_it_resolves(
    store: StateStore,
) -> None:
    user = _key()
    accepted, saved, _ = await _accept(store, user, NOW)
    assert saved
    assert accepted.conversation
    stored = await store.get_conversation(accepted.conversation)
    assert stored is not None
    assert (stored.mode, stored.customer_at, stored.last_message) == (
        BOT,
        NOW,
        accepted.message_id,
    )
    # The next step's load carries the conversation with the record.
    load = await store.lease_step("l:deduped", "me", 30, accepted.message_id)
    assert load.taken
    assert load.conversation == stored


async def test_a_step_expecting_another_mode_saves_nothing(store: StateStore) -> None:
    user = _key()
    first, _, _ = await _accept(store, user, NOW)
    key = first.conversation
    await store.change_conversation(key, ConversationWrite(mode=HUMAN, owner="ana", at=NOW))
    lease = LeaseHold(f"{first.message_id}:deduped", "me")
    moved = replace(first, state="llm1", version=first.version + 1)
    guard = ConversationWrite(key=key, expect_mode=BOT, mode=WAITING_HUMAN, at=NOW + 1)
    commit = StepCommit(moved, first.version, lease, writes=Writes(conversation=guard))
    done = await store.finish_step(commit)
    assert (done.saved, done.mode_changed) == (False, True)
    assert await store.get(first.message_id) == first
    stored = await store.get_conversation(key)
    assert stored is not None
    assert (stored.mode, stored.owner) == (HUMAN, "ana")
    # The lease went back all the same.
    assert (await store.lease_step(lease.name, "other", 30, first.message_id)).taken


async def test_a_claim_expecting_the_newest_message_saves_nothing_after_a_newer_one(
    store: StateStore,
) -> None:
    """A bot reply's send claim expects its message to be the customer's newest: once a
    newer message is accepted the save is refused (the draft is superseded), atomically."""
    user = _key()
    first, _, _ = await _accept(store, user, NOW)
    key = first.conversation
    lease = LeaseHold(f"{first.message_id}:queued_outbound", "me")
    moved = replace(first, state="sending", version=first.version + 1)
    guard = ConversationWrite(key=key, expect_mode=BOT, expect_newest=first.message_id)
    await _accept(store, user, NOW + 1)  # the customer writes again
    done = await store.finish_step(
        StepCommit(moved, first.version, lease, writes=Writes(conversation=guard))
    )
    assert (done.saved, done.mode_changed) == (False, True)
    assert await store.get(first.message_id) == first
    newest = await store.get_conversation(key)
    assert newest is not None
    assert newest.last_message != first.message_id
    allowed = replace(guard, expect_newest=newest.last_message)
    done = await store.finish_step(
        StepCommit(moved, first.version, lease, writes=Writes(conversation=allowed))
    )
    assert done.saved


async def test_a_lease_loads_the_conversations_last_records_when_asked(store: StateStore) -> None:
    user = _key()
    accepted = [(await _accept(store, user, NOW + n))[0] for n in range(4)]
    last = accepted[-1]
    load = await store.lease_step(f"{last.message_id}:deduped", "me", 30, last.message_id, 0, 3)
    assert load.records is not None
    assert [r.message_id for r in load.records] == [r.message_id for r in accepted[1:]]
    plain = await store.lease_step(f"{last.message_id}:llm1", "me", 30, last.message_id)
    assert plain.records is None


async def test_a_step_moves_the_mode_with_its_save(store: StateStore) -> None:
    user = _key()
    first, _, _ = await _accept(store, user, NOW)
    key = first.conversation
    lease = LeaseHold(f"{first.message_id}:deduped", "me")
    moved = replace(first, state="fallback", version=first.version + 1)
    write = ConversationWrite(
        key=key,
        expect_mode=BOT,
        mode=WAITING_HUMAN,
        reason="keyword",
        at=NOW + 1,
        audit=("pyloto", "request_human"),
    )
    done = await store.finish_step(
        StepCommit(moved, first.version, lease, writes=Writes(conversation=write))
    )
    assert done.saved
    assert not done.mode_changed
    stored = await store.get_conversation(key)
    assert stored is not None
    assert (stored.mode, stored.reason, stored.since, stored.version) == (
        WAITING_HUMAN,
        "keyword",
        NOW + 1,
        1,
    )
    # A stale save writes nothing to the conversation either.
    stale = ConversationWrite(key=key, mode=HUMAN, at=NOW + 2)
    again = await store.finish_step(
        StepCommit(moved, first.version, lease, writes=Writes(conversation=stale))
    )
    assert not again.saved
    stored = await store.get_conversation(key)
    assert stored is not None
    assert stored.mode == WAITING_HUMAN


async def test_an_accept_refused_by_the_mode_resolves_no_customer(store: StateStore) -> None:
    user = _key()
    first, _, _ = await _accept(store, user, NOW)
    await store.change_conversation(first.conversation, ConversationWrite(mode=HUMAN, at=NOW))
    guard = ConversationWrite(expect_mode=BOT, customer_at=NOW + 9)
    second, saved, mode_changed = await _accept(store, user, NOW + 9, guard)
    assert (saved, mode_changed) == (False, True)
    assert second.state == "received"
    stored = await store.get_conversation(first.conversation)
    assert stored is not None
    assert stored.customer_at == NOW


async def test_a_conversation_lists_its_records_oldest_first(store: StateStore) -> None:
    user = _key()
    accepted = [(await _accept(store, user, NOW + n))[0] for n in range(3)]
    key = accepted[0].conversation
    assert {r.conversation for r in accepted} == {key}
    listed = await store.conversation_records(key, 10)
    assert [r.message_id for r in listed] == [r.message_id for r in accepted]
    assert [r.message_id for r in await store.conversation_records(key, 2)] == [
        r.message_id for r in accepted[1:]
    ]
    assert await store.conversation_records(_key(), 10) == []


async def test_a_record_created_with_its_conversation_is_listed(store: StateStore) -> None:
    """An agent's reply is created already naming its conversation."""
    key = _key()
    reply = replace(record(created_at=NOW), conversation=key)
    await store.create_if_absent([reply])
    assert [r.message_id for r in await store.conversation_records(key, 10)] == [reply.message_id]


async def test_a_conversations_records_carry_their_replys_delivery_status(
    store: StateStore,
) -> None:
    """Each record listed has its reply's latest delivery status (what the inbox counts as
    delivered, so billable), None when no status came or it sent nothing."""
    key = _key()
    replied, silent = (replace(record(created_at=NOW + n), conversation=key) for n in range(2))
    await store.create_if_absent([replied, silent])
    sent = replace(replied, version=1, outbound_message_id="wamid.OUT.C1", updated_at=NOW + 5)
    assert await store.save(sent, expected_version=0)
    assert await store.record_status(StatusUpdate("wamid.OUT.C1", "delivered", int(NOW) + 6))
    listed = await store.conversation_records(key, 10)
    assert [(r.message_id, r.delivery_status) for r in listed] == [
        (replied.message_id, "delivered"),
        (silent.message_id, None),
    ]


async def test_the_stores_apply_writes_as_the_domain_rule_does(store: StateStore) -> None:
    """A random sequence of writes leaves the stored conversation where `apply_write`
    leaves it (the Redis scripts reimplement the rule in Lua)."""
    rng = random.Random(2612)
    key = _key()
    expected: Conversation | None = None
    for n in range(40):
        write = ConversationWrite(
            customer_at=rng.choice([None, NOW + rng.randint(0, 50)]),
            message_id=f"wamid.{n}",
            expect_mode=rng.choice([None, None, BOT, WAITING_HUMAN, HUMAN]),
            mode=rng.choice([None, None, BOT, WAITING_HUMAN, HUMAN]),
            reason=rng.choice(["", "keyword", "agent_release"]),
            owner=rng.choice(["", "ana"]),
            at=NOW + n + 0.25,
            agent_activity=rng.random() < 0.3,
            audit=rng.choice([None, ("ana", f"act {n}")]),
            expect_newest=rng.choice(["", "", f"wamid.{n - 1}", f"wamid.{rng.randint(0, n)}"]),
        )
        after = apply_write(expected, key, write)
        assert (await store.change_conversation(key, write)) == after
        expected = after if after is not None else expected
        assert await store.get_conversation(key) == expected
        if expected is not None:
            assert [(e.at, e.who, e.action) for e in expected.audit] == [
                (e.at, e.who, e.action)
                for e in (await store.get_conversation(key)).audit  # type: ignore[union-attr]
            ]


async def test_a_changed_bsuid_takes_the_conversation_along(store: StateStore) -> None:
    """A customer whose BSUID changes keeps their conversation: its mode (a person owning
    it), window and audit trail move to the new key, unless that one has its own."""
    previous, current = _key(), _key()
    await store.change_conversation(
        previous,
        ConversationWrite(
            customer_at=NOW, mode=HUMAN, owner="ana", at=NOW, audit=("ana", "took over")
        ),
    )
    await store.move_customer(previous, current)
    moved = await store.get_conversation(current)
    assert moved is not None
    assert (moved.mode, moved.owner, moved.customer_at) == (HUMAN, "ana", NOW)
    assert [e.action for e in moved.audit] == ["took over"]
    assert await store.get_conversation(previous) is None
    assert [
        c.key for c in await store.list_conversations(HUMAN, 100) if c.key in (previous, current)
    ] == [current]
    # A key with its own conversation keeps it.
    other = _key()
    await store.change_conversation(other, ConversationWrite(mode=WAITING_HUMAN, at=NOW))
    await store.move_customer(current, other)
    kept = await store.get_conversation(other)
    assert kept is not None
    assert kept.mode == WAITING_HUMAN


async def test_a_number_that_becomes_an_alias_hands_its_conversation_to_the_bsuid(
    store: StateStore,
) -> None:
    """A conversation kept under a customer's number (before WhatsApp named their BSUID)
    moves to the BSUID's key when a message names both."""
    phone, user = _key(), _key()
    await store.change_conversation(phone, ConversationWrite(mode=HUMAN, owner="ana", at=NOW))
    stored = record(created_at=NOW)
    await store.create_if_absent([stored])
    accepted = replace(stored, state="deduped", version=1)
    writes = Writes(customer=CustomerRequest(phone, user))
    lease = LeaseHold(f"{stored.message_id}:received", "me")
    done = await store.finish_step(StepCommit(accepted, 0, lease, writes=writes))
    assert done.customer == user
    moved = await store.get_conversation(user)
    assert moved is not None
    assert (moved.mode, moved.owner) == (HUMAN, "ana")


async def test_a_numbers_hash_leads_to_the_customer_key_its_records_name(
    store: StateStore,
) -> None:
    """The console finds a customer by their number: its hash, an alias of their BSUID's,
    leads to the key their records name; a key no alias names stands for itself."""
    phone_key, user_key = _key(), _key()
    stored = record(created_at=NOW)
    await store.create_if_absent([stored])
    writes = Writes(customer=CustomerRequest(phone_key, user_key))
    lease = LeaseHold(f"{stored.message_id}:received", "me")
    accepted = replace(stored, state="deduped", version=1)
    assert (await store.finish_step(StepCommit(accepted, 0, lease, writes=writes))).saved
    assert await store.customer_of(phone_key) == user_key
    assert await store.customer_of(user_key) == user_key
    listed = await store.conversation_records(await store.customer_of(phone_key), 10)
    assert [r.message_id for r in listed] == [stored.message_id]
    lone = _key()
    assert await store.customer_of(lone) == lone
    assert await store.conversation_records(lone, 10) == []
