"""The StateStore contract: every store adapter passes these, through the port's methods
only, and so does the unit tests' in-memory FakeStore (so what unit tests learn from it holds
of the real stores); the one test of persistence runs on the real stores alone."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from pyloto_corp.application.ports import (
    CustomerRequest,
    LeaseHold,
    RecordPage,
    RecordQuery,
    SlotRequest,
    StateStore,
    StepCommit,
    StepLoad,
    StepSave,
    TurnsWrite,
    Writes,
)
from pyloto_corp.domain.conversation import AGENT_REPLY_KIND, HANDOFF_REASON
from pyloto_corp.domain.ops_metrics import DAY, HOUR, MINUTE, bucket_of, duration_bin
from pyloto_corp.domain.records import HistoryEntry, Record, StatusUpdate, Turn
from pyloto_corp.domain.replies import reply_key
from pyloto_corp.domain.results import LLMCall, Results
from tests.integration.conftest import STORE_ADAPTERS, StoreBackend, terminal_states
from tests.integration.factories import UNICODE_TEXT, record, rich_record
from tests.support.helpers import new_wamid
from tests.unit.fakes import FakeStore

pytestmark = pytest.mark.anyio

NOW = 1_732_500_000


def _fake_backend(request: pytest.FixtureRequest) -> StoreBackend:
    terminal = terminal_states()
    return StoreBackend("fake", lambda: FakeStore(terminal))


@pytest.fixture(params=[*STORE_ADAPTERS, pytest.param(_fake_backend, id="fake")])
def store_backend(request: pytest.FixtureRequest) -> StoreBackend:
    """Each store adapter in turn, then the FakeStore unit tests use."""
    factory: Callable[[pytest.FixtureRequest], StoreBackend] = request.param
    return factory(request)


@pytest.fixture(params=STORE_ADAPTERS)
def real_store_backend(request: pytest.FixtureRequest) -> StoreBackend:
    """Each store adapter in turn, without FakeStore: for what outlives one client, which
    an object in memory has no storage for."""
    factory: Callable[[pytest.FixtureRequest], StoreBackend] = request.param
    return factory(request)


# Turns, pacing tokens and customer keys are written only by a step's save (`finish_step`
# with a StepCommit), as production writes them; these three write them that way.


async def append_turns(
    store: StateStore, conversation: str, turns: list[Turn], window_seconds: float, keep: int
) -> None:
    """Turns appended as a send's save appends them: whatever the save's outcome (here a
    stale one, so nothing else changes)."""
    stored = record()
    await store.create_if_absent([stored])
    write = TurnsWrite(conversation, turns, window_seconds, keep)
    commit = StepCommit(
        stored, 99, LeaseHold(f"{stored.message_id}:t", "t"), writes=Writes(turns=write)
    )
    assert (await store.finish_step(commit)).saved is False


async def take_slot(
    store: StateStore, key: str, now: float, per_seconds: float, burst: int
) -> float:
    """A pacing token taken as a send claim's save takes it: 0 when taken (and the claim
    saved), else the seconds until one is free (and nothing saved)."""
    stored = record()
    await store.create_if_absent([stored])
    claim = replace(stored, state="sending", version=1)
    slot = SlotRequest(key, now, per_seconds, burst)
    lease = LeaseHold(f"{stored.message_id}:q", "q")
    done = await store.finish_step(StepCommit(claim, 0, lease, writes=Writes(slot=slot)))
    assert done.saved is (done.wait <= 0)
    return done.wait


async def resolve_customer(store: StateStore, phone_key: str | None, user_key: str | None) -> str:
    """The customer key as an accept's save resolves it (and saves it on the record)."""
    stored = record()
    await store.create_if_absent([stored])
    accepted = replace(stored, state="deduped", version=1)
    request = CustomerRequest(phone_key, user_key)
    lease = LeaseHold(f"{stored.message_id}:r", "r")
    done = await store.finish_step(StepCommit(accepted, 0, lease, writes=Writes(customer=request)))
    assert done.saved
    loaded = await store.get(stored.message_id)
    assert loaded is not None
    assert loaded.conversation == done.customer
    return done.customer


def status(
    outbound_id: str, state: str, callback: str | None = None, at: int = NOW
) -> StatusUpdate:
    """A delivery status about `outbound_id`, echoing the reply key of record `callback`."""
    return StatusUpdate(
        outbound_id, state, at, callback_data=reply_key(callback) if callback else None
    )


# --- create_if_absent ---------------------------------------------------------------------


async def test_create_if_absent_creates_once_and_keeps_the_first(store: StateStore) -> None:
    """The first create of an id returns True, the second False and leaves the first record."""
    first = record(text="primeira")
    second = replace(record(first.message_id, text="segunda"), state="fallback", version=7)

    assert await store.create_if_absent([first]) == [True]
    assert await store.create_if_absent([second]) == [False]

    stored = await store.get(first.message_id)
    assert stored == first


async def test_create_if_absent_batch_mixes_new_and_existing(store: StateStore) -> None:
    """A batch reports True only for the new ids, in order, and creates exactly those."""
    existing = [record(), record()]
    assert await store.create_if_absent(existing) == [True, True]
    fresh = [record(), record()]
    batch = [fresh[0], replace(existing[0], state="failed"), fresh[1], existing[1]]

    assert await store.create_if_absent(batch) == [True, False, True, False]

    for item in [*existing, *fresh]:
        assert await store.get(item.message_id) == item


async def test_concurrent_creates_of_one_id_create_it_once(store: StateStore) -> None:
    """50 simultaneous create_if_absent calls of the same id: exactly one returns True."""
    message_id = new_wamid()
    candidates = [record(message_id, text=f"cópia {n}") for n in range(50)]

    results = await asyncio.gather(*(store.create_if_absent([c]) for c in candidates))

    flat = [created for result in results for created in result]
    assert flat.count(True) == 1
    winner = candidates[flat.index(True)]
    assert await store.get(message_id) == winner


# --- get ----------------------------------------------------------------------------------


async def test_get_unknown_id_is_none(store: StateStore) -> None:
    """An id never stored reads as None."""
    assert await store.get(new_wamid()) is None


async def test_get_round_trips_every_field(store: StateStore) -> None:
    """A record with every field, nested values and non-ASCII text reads back equal."""
    original = rich_record()
    assert await store.create_if_absent([original]) == [True]

    stored = await store.get(original.message_id)

    assert stored == original
    assert stored is not None
    assert stored.inbound.text == UNICODE_TEXT
    assert stored.history == original.history
    assert stored.inbound.details["nested"]["list"] == [1, 2.5, "três"]


# --- save ---------------------------------------------------------------------------------


async def test_save_with_expected_version_succeeds(store: StateStore) -> None:
    """save() with the stored version replaces the record, including nested changes."""
    original = record()
    await store.create_if_absent([original])
    moved = replace(
        original, state="deduped", version=1, updated_at=2_000.0, results=Results(summary="ã")
    )

    assert await store.save(moved, expected_version=0) is True
    assert await store.get(original.message_id) == moved


async def test_save_with_stale_version_changes_nothing(store: StateStore) -> None:
    """save() with an outdated version returns False and the stored record stays as it was."""
    original = record()
    await store.create_if_absent([original])
    current = replace(original, state="deduped", version=1)
    assert await store.save(current, expected_version=0)

    stale = replace(original, state="failed", version=1, failure_reason="stale writer")
    assert await store.save(stale, expected_version=0) is False
    assert await store.get(original.message_id) == current


async def test_save_of_unknown_id_is_refused(store: StateStore) -> None:
    """save() never creates a record: an unknown id returns False and stays unknown."""
    ghost = record()
    assert await store.save(ghost, expected_version=0) is False
    assert await store.get(ghost.message_id) is None


async def test_concurrent_saves_from_one_version_one_wins(store: StateStore) -> None:
    """Two saves from the same version at once: exactly one succeeds and its record is kept."""
    original = record()
    await store.create_if_absent([original])
    left = replace(original, state="deduped", version=1, results=Results(summary="left"))
    right = replace(original, state="ignored", version=1, results=Results(summary="right"))

    outcomes = await asyncio.gather(
        store.save(left, expected_version=0), store.save(right, expected_version=0)
    )

    assert sorted(outcomes) == [False, True]
    winner = left if outcomes[0] else right
    assert await store.get(original.message_id) == winner


# --- record_status ------------------------------------------------------------------------


async def _sent_record(store: StateStore, outbound_id: str | None = "wamid.OUT") -> str:
    base = record()
    await store.create_if_absent([base])
    if outbound_id is not None:
        done = replace(base, state="sent", version=1, outbound_message_id=outbound_id)
        assert await store.save(done, expected_version=0)
    return base.message_id


async def _delivery(store: StateStore, message_id: str) -> str | None:
    stored = await store.get(message_id)
    assert stored is not None
    return stored.delivery_status


async def _answers(store: StateStore, outbound_id: str, *states: str) -> list[bool]:
    """What record_status answers to each status of `outbound_id`, sent in this order."""
    answers = [await store.record_status(status(outbound_id, state)) for state in states]
    # Real booleans, so comparing the list is as strict as `is True` / `is False` on each.
    assert all(type(answer) is bool for answer in answers), answers
    return answers


async def test_status_moves_forward(store: StateStore) -> None:
    """sent → delivered → read each move the status forward and show on get."""
    outbound_id = new_wamid()
    message_id = await _sent_record(store, outbound_id)
    assert await _delivery(store, message_id) is None

    for state in ("sent", "delivered", "read"):
        assert await store.record_status(status(outbound_id, state)) is True
        assert await _delivery(store, message_id) == state


async def test_status_never_moves_backwards(store: StateStore) -> None:
    """read then delivered (out of order) keeps read; repeating a status is not a move."""
    outbound_id = new_wamid()
    message_id = await _sent_record(store, outbound_id)

    moved = await _answers(store, outbound_id, "read", "delivered", "sent", "read")
    assert moved == [True, False, False, False]
    assert await _delivery(store, message_id) == "read"


async def test_failed_after_sent_wins_and_keeps_errors(store: StateStore) -> None:
    """failed after sent moves forward and its errors are readable on the record."""
    outbound_id = new_wamid()
    message_id = await _sent_record(store, outbound_id)
    errors = [{"code": 131047, "title": "Re-engagement message — fora da janela"}]

    assert await store.record_status(status(outbound_id, "sent")) is True
    failed = StatusUpdate(outbound_id, "failed", NOW + 5, errors=errors)
    assert await store.record_status(failed) is True

    stored = await store.get(message_id)
    assert stored is not None
    assert stored.delivery_status == "failed"
    assert stored.delivery_errors == errors


async def test_unknown_status_is_ignored(store: StateStore) -> None:
    """A status name outside the lifecycle returns False and changes nothing."""
    outbound_id = new_wamid()
    message_id = await _sent_record(store, outbound_id)
    assert await _answers(store, outbound_id, "delivered") == [True]

    assert await _answers(store, outbound_id, "deleted", "warning") == [False, False]
    assert await _delivery(store, message_id) == "delivered"


async def test_status_before_outbound_id_is_saved(store: StateStore) -> None:
    """A status arriving before the record knows its outbound id shows up once it is saved."""
    base = record(state="queued_outbound")
    await store.create_if_absent([base])
    outbound_id = new_wamid()

    assert await store.record_status(status(outbound_id, "delivered")) is True
    assert await _delivery(store, base.message_id) is None

    done = replace(base, state="sent", version=1, outbound_message_id=outbound_id)
    assert await store.save(done, expected_version=0)
    assert await _delivery(store, base.message_id) == "delivered"
    assert await store.record_status(status(outbound_id, "sent")) is False
    assert await _delivery(store, base.message_id) == "delivered"


async def test_status_found_by_callback_data(store: StateStore) -> None:
    """A status whose callback data is the inbound id reaches a record with no outbound id."""
    message_id = await _sent_record(store, outbound_id=None)
    outbound_id = new_wamid()

    assert await store.record_status(status(outbound_id, "sent", callback=message_id)) is True
    assert await _delivery(store, message_id) == "sent"
    assert await store.record_status(status(outbound_id, "read", callback=message_id)) is True
    assert await _delivery(store, message_id) == "read"


async def test_status_by_callback_names_its_outbound_id(store: StateStore) -> None:
    """get() names the outbound id of a status found only by callback data (so a send whose
    answer was lost can be reconciled), and no outbound id while no status is known."""
    message_id = await _sent_record(store, outbound_id=None)
    stored = await store.get(message_id)
    assert stored is not None
    assert stored.delivery_outbound_id is None
    outbound_id = new_wamid()

    assert await store.record_status(status(outbound_id, "delivered", callback=message_id))

    stored = await store.get(message_id)
    assert stored is not None
    assert (stored.delivery_status, stored.delivery_outbound_id) == ("delivered", outbound_id)
    assert stored.outbound_message_id is None


async def test_status_of_another_message_does_not_leak(store: StateStore) -> None:
    """A status about one outbound message never shows on a different record."""
    mine = await _sent_record(store, new_wamid())
    other_outbound = new_wamid()
    await _sent_record(store, other_outbound)

    assert await store.record_status(status(other_outbound, "read")) is True
    assert await _delivery(store, mine) is None


# --- open_records and purge ---------------------------------------------------------------


async def test_open_records_lists_old_non_terminal_records(store: StateStore) -> None:
    """open_records returns (id, state) of non-terminal records updated before the bound only."""
    old_open = [record(state=s, updated_at=100.0) for s in ("received", "fallback")]
    old_open.append(record(state="queued_outbound", updated_at=150.0))
    old_terminal = [record(state=s, updated_at=100.0) for s in ("sent", "failed", "ignored")]
    recent_open = [record(state="deduped", created_at=100.0, updated_at=500.0)]
    await store.create_if_absent([*old_open, *old_terminal, *recent_open])

    found = await store.open_records(older_than=200.0)

    assert sorted(found) == sorted((r.message_id, r.state) for r in old_open)


async def test_failed_records_lists_failed_ones_since_the_bound(store: StateStore) -> None:
    """failed_records: ids of `failed` records updated at or after `since`, oldest first,
    at most `limit`; None means any time; records in other states never appear."""
    old = record(state="failed", updated_at=100.0)
    middle = record(state="failed", updated_at=300.0)
    recent = record(state="failed", updated_at=400.0)
    others = [record(state=s, updated_at=500.0) for s in ("sent", "queued_outbound")]
    await store.create_if_absent([recent, old, *others, middle])

    assert await store.failed_records(since=None, limit=10) == [
        old.message_id,
        middle.message_id,
        recent.message_id,
    ]
    assert await store.failed_records(since=300.0, limit=10) == [
        middle.message_id,
        recent.message_id,
    ]
    assert await store.failed_records(since=None, limit=1) == [old.message_id]
    assert await store.failed_records(since=401.0, limit=10) == []


async def test_failed_records_follow_saves_in_and_out_of_failed(store: StateStore) -> None:
    """A save into `failed` lists the record under its new update time; a save out of it
    (a replay) takes it off the list; purge removes it for good."""
    first = record(state="queued_outbound", created_at=100.0, updated_at=100.0)
    await store.create_if_absent([first])
    assert await store.failed_records(since=None, limit=10) == []

    failed = replace(first, state="failed", version=1, updated_at=250.0)
    assert await store.save(failed, expected_version=0)
    assert await store.failed_records(since=200.0, limit=10) == [first.message_id]

    replayed = replace(failed, state="queued_outbound", version=2, updated_at=300.0)
    assert await store.save(replayed, expected_version=1)
    assert await store.failed_records(since=None, limit=10) == []

    again = replace(replayed, state="failed", version=3, updated_at=350.0)
    assert await store.save(again, expected_version=2)
    assert await store.failed_records(since=300.0, limit=10) == [first.message_id]
    assert await store.purge(created_before=200.0) == 1
    assert await store.failed_records(since=None, limit=10) == []


async def test_purge_removes_old_records_and_their_statuses(store: StateStore) -> None:
    """purge deletes and counts records created before the bound, with their statuses, only."""
    old_by_id = record(created_at=100.0)
    old_by_callback = record(created_at=100.0)
    kept = record(created_at=900.0)
    await store.create_if_absent([old_by_id, old_by_callback, kept])
    out_old, out_callback, out_kept = new_wamid(), new_wamid(), new_wamid()
    for base, outbound_id in ((old_by_id, out_old), (kept, out_kept)):
        done = replace(base, state="sent", version=1, outbound_message_id=outbound_id)
        assert await store.save(done, expected_version=0)
    # Status timestamps are recent: only the records' age may make them go.
    assert await store.record_status(status(out_old, "read"))
    assert await store.record_status(status(out_callback, "read", old_by_callback.message_id))
    assert await store.record_status(status(out_kept, "read"))

    assert await store.purge(created_before=500.0) == 2

    assert await store.get(old_by_id.message_id) is None
    assert await store.get(old_by_callback.message_id) is None
    assert await _delivery(store, kept.message_id) == "read"
    # The purged statuses are gone: an earlier status counts as new again.
    assert await store.record_status(status(out_old, "sent")) is True
    assert await store.record_status(status(out_callback, "sent")) is True
    assert await store.record_status(status(out_kept, "sent")) is False
    assert await store.purge(created_before=500.0) == 0


# --- lifecycle ----------------------------------------------------------------------------


async def test_data_survives_reopening(real_store_backend: StoreBackend) -> None:
    """Records, versions and statuses written by one client are read back by a new one
    (real stores only: FakeStore's data lives in the object, so no second client sees it)."""
    first = real_store_backend.open()
    original = rich_record()
    try:
        assert await first.create_if_absent([original]) == [True]
        done = replace(original, state="sent", version=5, outbound_message_id="wamid.KEPT")
        assert await first.save(done, expected_version=4)
        assert await first.record_status(status("wamid.KEPT", "delivered"))
    finally:
        await first.close()

    second = real_store_backend.open()
    try:
        stored = await second.get(original.message_id)
        assert stored == replace(
            done, delivery_status="delivered", delivery_outbound_id="wamid.KEPT"
        )
        assert await second.create_if_absent([original]) == [False]
        assert await second.save(done, expected_version=4) is False
    finally:
        await second.close()


async def test_ping_on_healthy_store_passes(store: StateStore) -> None:
    """ping() returns without raising on a working store, before and after writes."""
    await store.ping()
    await store.create_if_absent([record()])
    await store.ping()


# --- leases -------------------------------------------------------------------------------


async def take(store: StateStore, name: str, owner: str, seconds: float) -> bool:
    """Whether `owner` takes the lease `name`, as a step takes it (with lease_step; no
    record is stored under the id it loads)."""
    return (await store.lease_step(name, owner, seconds, "wamid.NO-RECORD")).taken


async def test_a_held_lease_cannot_be_taken_again(store: StateStore) -> None:
    """While held, a lease refuses every taker, its own owner included (no re-entry)."""
    assert await take(store, "wamid.L:deduped", "instance-a", 30) is True
    assert await take(store, "wamid.L:deduped", "instance-b", 30) is False
    assert await take(store, "wamid.L:deduped", "instance-a", 30) is False
    assert await take(store, "wamid.L:llm1", "instance-b", 30) is True


async def test_only_the_owner_releases_a_lease(store: StateStore) -> None:
    """A release by someone else changes nothing; the owner's release frees the lease."""
    assert await take(store, "wamid.R:llm1", "instance-a", 30)
    await store.release_lease("wamid.R:llm1", "instance-b")
    assert await take(store, "wamid.R:llm1", "instance-b", 30) is False
    await store.release_lease("wamid.R:llm1", "instance-a")
    assert await take(store, "wamid.R:llm1", "instance-b", 30) is True


async def test_an_expired_lease_can_be_taken(store: StateStore) -> None:
    """A holder that never releases (it crashed) blocks others only until the lease expires."""
    assert await take(store, "wamid.E:llm2", "crashed", 0.05)
    await asyncio.sleep(0.2)
    assert await take(store, "wamid.E:llm2", "survivor", 30) is True


async def test_concurrent_lease_takers_one_wins(store: StateStore) -> None:
    """Twenty deliveries racing for one step's lease: exactly one gets it."""
    results = await asyncio.gather(
        *(take(store, "wamid.C:received", f"owner-{n}", 30) for n in range(20))
    )
    assert sum(results) == 1


async def test_lease_step_takes_the_lease_then_loads_the_record(store: StateStore) -> None:
    """One call takes a step's lease and returns the record; a second taker gets neither."""
    stored = rich_record()
    await store.create_if_absent([stored])
    lease = f"{stored.message_id}:received"
    first = await store.lease_step(lease, "a", 30, stored.message_id)
    assert (first.taken, first.record) == (True, stored)
    second = await store.lease_step(lease, "b", 30, stored.message_id)
    assert (second.taken, second.record) == (False, None)
    assert await take(store, lease, "b", 30) is False, "still held by a"


async def test_lease_step_of_an_unknown_record_takes_the_lease(store: StateStore) -> None:
    """No record: the lease is taken all the same (the caller gives it back)."""
    load = await store.lease_step("wamid.NONE:received", "a", 30, "wamid.NONE")
    assert (load.taken, load.record) == (True, None)
    assert await take(store, "wamid.NONE:received", "b", 30) is False


async def test_finish_step_saves_under_the_version_check_and_frees_the_lease(
    store: StateStore,
) -> None:
    """The save follows the version check; the lease is given back either way, but only by
    its owner."""
    stored = record()
    await store.create_if_absent([stored])
    moved = replace(stored, state="deduped", version=1)
    assert await take(store, "step", "a", 30)
    assert (await store.finish_step(StepCommit(moved, 0, LeaseHold("step", "a")))).saved is True
    assert (await store.get(stored.message_id)) == moved
    assert await take(store, "step", "b", 30) is True, "released"

    again = replace(moved, state="llm1", version=2)
    assert (await store.finish_step(StepCommit(again, 0, LeaseHold("step", "a")))).saved is False, (
        "stale version"
    )
    assert await take(store, "step", "c", 30) is False, "b's lease is untouched"
    await store.release_lease("step", "b")
    assert (await store.finish_step(StepCommit(again, 1, LeaseHold("step", "c")))).saved is True
    assert (await store.get(stored.message_id)) == again


# --- lease_step / finish_step (a step's two calls, with what it reads and writes) -------------


async def test_lease_step_loads_the_conversation_the_record_names(store: StateStore) -> None:
    """Asked for turns, the lease also brings the last ones of the record's conversation,
    oldest first; none asked, none named or lease refused: no turns."""
    turns = [Turn("customer", f"t{n}", float(n)) for n in range(5)]
    await append_turns(store, "conv-step", turns, 86400, 20)
    named = replace(rich_record(), conversation="conv-step")
    unnamed = record()
    await store.create_if_absent([named, unnamed])

    load = await store.lease_step("a:llm1", "a", 30, named.message_id, turns=3)
    assert load == StepLoad(True, named, turns[-3:])
    assert await store.lease_step("a:llm1", "b", 30, named.message_id, 3) == StepLoad(False)
    assert await store.lease_step("b:llm1", "a", 30, named.message_id) == StepLoad(True, named)
    assert await store.lease_step("c:llm1", "a", 30, unnamed.message_id, 3) == StepLoad(
        True, unnamed
    )
    assert await store.lease_step("d:x", "a", 30, "wamid.NONE", 3) == StepLoad(True)
    empty = replace(record(), conversation="conv-empty")
    await store.create_if_absent([empty])
    assert await store.lease_step("e:llm1", "a", 30, empty.message_id, 3) == StepLoad(
        True, empty, []
    )


async def test_finish_step_saves_releases_and_takes_the_next_lease(store: StateStore) -> None:
    """The save follows the version check and keeps the record's conversation; the lease is
    given back either way; the next lease is taken only when the record was saved, and not
    from another holder."""
    stored = record()
    await store.create_if_absent([stored])
    moved = replace(stored, state="sending", version=1, conversation="conv-f")
    assert await take(store, "m:queued_outbound", "a", 30)
    done = await store.finish_step(
        StepCommit(
            moved,
            0,
            LeaseHold("m:queued_outbound", "a"),
            next_lease=LeaseHold("m:sending", "a2", 30),
        )
    )
    assert done == StepSave(True, 0.0, True)
    assert await store.get(stored.message_id) == moved
    assert await take(store, "m:queued_outbound", "b", 30), "released"
    assert await take(store, "m:sending", "b", 30) is False, "taken for a2"

    # The same name released and taken again (a claim made anew in `sending`).
    again = replace(moved, version=2)
    done = await store.finish_step(
        StepCommit(
            again, 1, LeaseHold("m:sending", "a2"), next_lease=LeaseHold("m:sending", "a3", 30)
        )
    )
    assert done == StepSave(True, 0.0, True)
    assert await take(store, "m:sending", "b", 30) is False, "taken for a3"

    stale = replace(moved, version=9)
    done = await store.finish_step(
        StepCommit(stale, 1, LeaseHold("m:sending", "a3"), next_lease=LeaseHold("m:next", "x", 30))
    )
    assert done == StepSave(False, 0.0, False)
    assert await take(store, "m:sending", "b", 30), "released although stale"
    assert await take(store, "m:next", "b", 30), "not taken: nothing was saved"

    await take(store, "m:other", "c", 30)
    third = replace(again, version=3)
    done = await store.finish_step(
        StepCommit(third, 2, LeaseHold("m:x", "nobody"), next_lease=LeaseHold("m:other", "d", 30))
    )
    assert done == StepSave(True, 0.0, False), "held by c"


async def test_finish_step_saves_a_claim_only_with_a_pacing_token(store: StateStore) -> None:
    """With a slot asked for, the save needs a token of the bucket: none free, nothing is
    saved and the wait is named; a stale save takes no token."""
    first, second = record(), record()
    await store.create_if_absent([first, second])
    slot = SlotRequest("pace-f", 1000.0, 6.0, 1)
    claim = replace(first, state="sending", version=1)
    assert await store.finish_step(
        StepCommit(claim, 5, LeaseHold("l", "a"), writes=Writes(slot=slot))
    ) == StepSave(False)
    assert await store.finish_step(
        StepCommit(claim, 0, LeaseHold("l", "a"), writes=Writes(slot=slot))
    ) == StepSave(True)
    other = replace(second, state="sending", version=1)
    refused = await store.finish_step(
        StepCommit(
            other,
            0,
            LeaseHold("l", "a"),
            next_lease=LeaseHold("n", "a", 30),
            writes=Writes(slot=slot),
        )
    )
    assert refused.saved is False
    assert refused.next_taken is False
    assert refused.wait == pytest.approx(6.0)
    assert await store.get(second.message_id) == second
    later = SlotRequest("pace-f", 1006.0, 6.0, 1)
    assert (
        await store.finish_step(
            StepCommit(other, 0, LeaseHold("l", "a"), writes=Writes(slot=later))
        )
    ).saved is True


async def test_finish_step_appends_turns_whatever_the_save(store: StateStore) -> None:
    """The send's turns join the conversation with the save, and even when it is stale
    (the reply went out all the same)."""
    stored = record()
    await store.create_if_absent([stored])
    turns = [Turn("customer", "oi", 10.0), Turn("business", "olá", 10.0)]
    write = TurnsWrite("conv-t", turns, 86400, 20)
    sent = replace(stored, state="sent", version=1)
    assert (
        await store.finish_step(
            StepCommit(sent, 0, LeaseHold("l", "a"), writes=Writes(turns=write))
        )
    ).saved is True
    late = TurnsWrite("conv-t", [Turn("business", "de novo", 11.0)], 86400, 3)
    assert (
        await store.finish_step(StepCommit(sent, 0, LeaseHold("l", "a"), writes=Writes(turns=late)))
    ).saved is False
    assert [t.text for t in await store.recent_turns("conv-t", 0.0, 10)] == [
        "oi",
        "olá",
        "de novo",
    ]


# --- conversation turns ----------------------------------------------------------------------


async def test_turns_come_back_oldest_first(store: StateStore) -> None:
    """Appended turns are read back in the order they happened, text intact."""
    turns = [
        Turn("customer", "Olá, quanto custa a revisão? 🚗", 100.0),
        Turn("business", "Olá! A revisão custa a partir de R$ 200.", 101.0),
    ]
    await append_turns(store, "conv-a", turns, window_seconds=86400, keep=20)
    await append_turns(store, "conv-a", [Turn("customer", "E aos sábados?", 102.0)], 86400, 20)
    got = await store.recent_turns("conv-a", since=0.0, limit=10)
    assert got == [*turns, Turn("customer", "E aos sábados?", 102.0)]


async def test_turns_respect_since_limit_and_keep(store: StateStore) -> None:
    """Only turns in the window come back, at most `limit`, and only `keep` are kept."""
    turns = [Turn("customer", f"mensagem {n}", float(n)) for n in range(10)]
    await append_turns(store, "conv-b", turns, window_seconds=86400, keep=6)
    assert [t.text for t in await store.recent_turns("conv-b", since=0.0, limit=10)] == [
        f"mensagem {n}" for n in range(4, 10)
    ]
    assert [t.at for t in await store.recent_turns("conv-b", since=7.0, limit=10)] == [7, 8, 9]
    assert [t.at for t in await store.recent_turns("conv-b", since=0.0, limit=2)] == [8, 9]


async def test_turns_outside_the_window_are_not_returned(store: StateStore) -> None:
    """A conversation that went quiet for longer than the window starts afresh."""
    await append_turns(store, "conv-c", [Turn("customer", "antiga", 1000.0)], 3600, 20)
    await append_turns(store, "conv-c", [Turn("customer", "nova", 1000.0 + 7200)], 3600, 20)
    recent = await store.recent_turns("conv-c", since=1000.0 + 7200 - 3600, limit=10)
    assert [t.text for t in recent] == ["nova"]


async def test_conversations_are_isolated(store: StateStore) -> None:
    """One customer's turns never show in another's conversation."""
    await append_turns(store, "conv-d", [Turn("customer", "meu pedido", 5.0)], 86400, 20)
    assert await store.recent_turns("conv-e", since=0.0, limit=10) == []


# --- take_slot (per-recipient pacing) -----------------------------------------------------


async def test_take_slot_allows_the_burst_then_names_the_wait(store: StateStore) -> None:
    """A fresh bucket gives `burst` slots at once; the next one waits one refill period."""
    key = new_wamid()
    assert [await take_slot(store, key, 1000.0, 6.0, 3) for _ in range(3)] == [0.0] * 3

    assert await take_slot(store, key, 1000.0, 6.0, 3) == pytest.approx(6.0)
    assert await take_slot(store, key, 1003.0, 6.0, 3) == pytest.approx(3.0)


async def test_take_slot_refills_over_time_up_to_the_burst(store: StateStore) -> None:
    """Slots come back one per period, never more than the burst however long the pause."""
    key = new_wamid()
    for _ in range(2):
        assert await take_slot(store, key, 1000.0, 6.0, 2) == 0.0
    assert await take_slot(store, key, 1006.0, 6.0, 2) == 0.0
    assert await take_slot(store, key, 1006.0, 6.0, 2) > 0

    later = 1006.0 + 600.0
    assert [await take_slot(store, key, later, 6.0, 2) for _ in range(2)] == [0.0, 0.0]
    assert await take_slot(store, key, later, 6.0, 2) > 0


async def test_take_slot_keys_are_isolated(store: StateStore) -> None:
    """An empty bucket for one recipient leaves another's full."""
    first, second = new_wamid(), new_wamid()
    assert await take_slot(store, first, 1000.0, 6.0, 1) == 0.0
    assert await take_slot(store, first, 1000.0, 6.0, 1) > 0
    assert await take_slot(store, second, 1000.0, 6.0, 1) == 0.0


async def test_concurrent_take_slot_gives_exactly_the_burst(store: StateStore) -> None:
    """20 simultaneous takers of a bucket of 5: exactly 5 get a slot (the take is atomic)."""
    key = new_wamid()
    waits = await asyncio.gather(*(take_slot(store, key, 1000.0, 6.0, 5) for _ in range(20)))
    assert sum(1 for wait in waits if wait == 0.0) == 5


# --- the operations console's read model --------------------------------------------------


def moved(
    before: Record,
    dest: str,
    at: float,
    duration_ms: float = 5.0,
    trigger: str = "step",
    **changes: Any,
) -> Record:
    """`before` after one transition to `dest` at `at` by `trigger`, as Record.apply leaves
    it."""
    entry = HistoryEntry(before.state, dest, trigger, at, duration_ms, 1)
    return replace(
        before,
        state=dest,
        version=before.version + 1,
        updated_at=at,
        history=[*before.history, entry],
        **changes,
    )


async def bucket(store: StateStore, width: int, at: float) -> dict[str, int]:
    """The counters of the bucket of `width` that time `at` falls in ({} if none)."""
    start = bucket_of(at, width)
    found = dict(await store.counter_buckets(width, at))
    return found.get(start, {})


async def test_creates_count_once_per_record_created(store: StateStore) -> None:
    """Each record created adds `t:>received` to the minute and the hour of its creation;
    a second create of the same id (a redelivery) adds nothing."""
    now = time.time()
    first, second = record(created_at=now), record(created_at=now)
    assert await store.create_if_absent([first, second]) == [True, True]
    assert await store.create_if_absent([first, record(created_at=now)]) == [False, True]

    for width in (MINUTE, HOUR):
        assert await bucket(store, width, now) == {"t:>received": 3}, width


async def test_saves_count_their_transition_and_stale_ones_nothing(store: StateStore) -> None:
    """A save adds the counters of its transition in the buckets of its update time (the
    step's duration bin, end-to-end time on `sent`, the reason on `fallback`); a stale save,
    a save of an unknown id and a save whose history ends elsewhere add nothing."""
    now = time.time()
    base, untold = record(created_at=now - 7200), record(created_at=now - 7200)
    await store.create_if_absent([base, untold])  # created in an older bucket
    accepted = moved(base, "deduped", now, duration_ms=5.0)
    assert await store.save(accepted, expected_version=0)
    stale = moved(base, "ignored", now)
    assert await store.save(stale, expected_version=0) is False
    assert await store.save(moved(record(), "deduped", now), expected_version=0) is False
    no_entry = replace(untold, state="deduped", version=1, updated_at=now)
    assert await store.save(no_entry, expected_version=0)

    expected = {"t:received>deduped": 1, f"d:received:{duration_bin(5.0)}": 1}
    assert await bucket(store, MINUTE, now) == expected
    assert await bucket(store, HOUR, now) == expected

    fell_back = moved(accepted, "fallback", now, 40.0, fallback_reason="timeout")
    assert await store.save(fell_back, expected_version=1)
    queued = moved(fell_back, "queued_outbound", now, 1.0)
    assert await store.save(queued, expected_version=2)
    sent = moved(queued, "sent", now, 300.0)
    assert await store.save(sent, expected_version=3)
    counters = await bucket(store, MINUTE, now)
    assert counters["f:timeout"] == 1
    assert counters["t:deduped>fallback"] == 1
    assert counters["t:queued_outbound>sent"] == 1
    assert counters[f"e:{duration_bin(7200_000.0)}"] == 1
    assert sum(n for name, n in counters.items() if name.startswith("t:")) == 4


async def test_finish_step_counts_only_what_it_saved(store: StateStore) -> None:
    """finish_step counts its transition when it saved; a stale one, or one whose pacing
    slot was not free (nothing saved), counts nothing."""
    now = time.time()
    first, second = record(created_at=now - 7200), record(created_at=now - 7200)
    await store.create_if_absent([first, second])
    step = moved(first, "deduped", now, 2.0)
    assert (await store.finish_step(StepCommit(step, 0, LeaseHold("l1", "a")))).saved
    assert not (
        await store.finish_step(StepCommit(moved(first, "ignored", now), 0, LeaseHold("l1", "a")))
    ).saved
    slot = SlotRequest(new_wamid(), now, 60.0, 1)
    claim = moved(second, "sending", now, 2.0)
    assert (
        await store.finish_step(
            StepCommit(claim, 0, LeaseHold("l2", "a"), writes=Writes(slot=slot))
        )
    ).saved
    refused = await store.finish_step(
        StepCommit(moved(step, "llm1", now), 1, LeaseHold("l3", "a"), writes=Writes(slot=slot))
    )
    assert (refused.saved, refused.wait > 0) == (False, True)

    assert await bucket(store, MINUTE, now) == {
        "t:received>deduped": 1,
        "t:received>sending": 1,
        f"d:received:{duration_bin(2.0)}": 2,
    }


async def test_state_counts_follow_each_write_and_purge(store: StateStore) -> None:
    """Records per state: created, moved by save and finish_step (a stale save moves none),
    and gone once purged; states with none are absent or zero."""
    old = [record(created_at=100.0) for _ in range(3)]
    young = [record(created_at=900.0) for _ in range(2)]
    assert await store.state_counts() in ({}, {"received": 0})
    await store.create_if_absent([*old, *young])
    await store.create_if_absent([old[0]])  # a duplicate: nothing
    assert nonzero(await store.state_counts()) == {"received": 5}

    assert await store.save(moved(old[0], "deduped", 200.0), expected_version=0)
    assert not await store.save(moved(old[0], "ignored", 200.0), expected_version=0)
    assert await store.save(moved(old[1], "ignored", 200.0), expected_version=0)
    assert (
        await store.finish_step(
            StepCommit(moved(young[0], "deduped", 950.0), 0, LeaseHold("l", "a"))
        )
    ).saved
    deduped = moved(young[0], "deduped", 950.0)
    assert (
        await store.finish_step(StepCommit(moved(deduped, "llm1", 960.0), 1, LeaseHold("l", "a")))
    ).saved
    assert nonzero(await store.state_counts()) == {
        "received": 2,
        "deduped": 1,
        "ignored": 1,
        "llm1": 1,
    }

    assert await store.purge(created_before=500.0) == 3
    assert nonzero(await store.state_counts()) == {"received": 1, "llm1": 1}


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    """The states that hold records (a store may name empty ones with 0)."""
    return {state: n for state, n in counts.items() if n}


async def test_counter_buckets_come_oldest_first_from_since(store: StateStore) -> None:
    """Buckets that start at or after bucket_of(since), oldest first; buckets older than
    their resolution keeps are never returned; an unknown width is refused."""
    now = time.time()
    times = [now - 3 * HOUR, now - 180, now - 60, now]
    await store.create_if_absent([record(created_at=at) for at in times])

    minutes = await store.counter_buckets(MINUTE, now - 120)
    assert [start for start, _ in minutes] == [bucket_of(now - 60, MINUTE), bucket_of(now, MINUTE)]
    assert all(counters == {"t:>received": 1} for _, counters in minutes)
    every_minute = await store.counter_buckets(MINUTE, 0.0)  # older than kept: left out
    assert [start for start, _ in every_minute] == [bucket_of(at, MINUTE) for at in times[1:]]

    hours = await store.counter_buckets(HOUR, 0.0)
    starts = [start for start, _ in hours]
    assert starts == sorted({bucket_of(at, HOUR) for at in times})
    assert sum(counters["t:>received"] for _, counters in hours) == 4
    assert [start for start, _ in await store.counter_buckets(HOUR, now)] == [bucket_of(now, HOUR)]
    with pytest.raises(ValueError, match="60"):
        await store.counter_buckets(17, now)


def ids(page: RecordPage) -> list[str]:
    return [r.message_id for r in page.records]


async def _page_fixture(store: StateStore) -> dict[str, Record]:
    """Records in several states, reasons and update times, stored as saved."""
    made = {
        "a": record(state="sent", updated_at=1_000.0),
        "b": replace(record(state="fallback", updated_at=2_000.0), fallback_reason="timeout"),
        "c": replace(record(state="sent", updated_at=3_000.0), fallback_reason="timeout"),
        "d": replace(record(state="fallback", updated_at=4_000.0), fallback_reason="refusal"),
        "e": record(state="received", updated_at=5_000.0),
    }
    await store.create_if_absent(list(made.values()))
    return made


async def test_list_records_newest_first_with_each_filter(store: StateStore) -> None:
    """Pages come newest last update first, filtered by state, fallback reason or both, and
    hold the records as stored (without a delivery status)."""
    made = await _page_fixture(store)
    name = {r.message_id: key for key, r in made.items()}

    def keys(page: RecordPage) -> list[str]:
        return [name[i] for i in ids(page)]

    every = await store.list_records(RecordQuery())
    assert keys(every) == ["e", "d", "c", "b", "a"]
    assert every.records == [made[k] for k in "edcba"]
    assert every.next_before is None
    assert keys(await store.list_records(RecordQuery(state="sent"))) == ["c", "a"]
    assert keys(await store.list_records(RecordQuery(fallback_reason="timeout"))) == ["c", "b"]
    both = RecordQuery(state="fallback", fallback_reason="timeout")
    assert keys(await store.list_records(both)) == ["b"]
    assert keys(await store.list_records(RecordQuery(state="llm2"))) == []
    assert keys(await store.list_records(RecordQuery(fallback_reason="other"))) == []

    # A save moves a record between the filters' answers.
    replayed = moved(made["d"], "queued_outbound", 6_000.0, fallback_reason="replayed")
    assert await store.save(replayed, expected_version=0)
    assert keys(await store.list_records(RecordQuery())) == ["d", "e", "c", "b", "a"]
    assert keys(await store.list_records(RecordQuery(fallback_reason="refusal"))) == []
    assert keys(await store.list_records(RecordQuery(fallback_reason="replayed"))) == ["d"]
    assert keys(await store.list_records(RecordQuery(state="fallback"))) == ["b"]
    assert keys(await store.list_records(RecordQuery(state="queued_outbound"))) == ["d"]


async def test_list_records_time_bounds(store: StateStore) -> None:
    """`since` is inclusive and `until` exclusive, with or without other filters."""
    made = await _page_fixture(store)
    at = {r.message_id: r.updated_at for r in made.values()}

    page = await store.list_records(RecordQuery(since=2_000.0, until=4_000.0))
    assert [at[i] for i in ids(page)] == [3_000.0, 2_000.0]
    page = await store.list_records(RecordQuery(since=2_000.5))
    assert [at[i] for i in ids(page)] == [5_000.0, 4_000.0, 3_000.0]
    page = await store.list_records(RecordQuery(state="sent", until=3_000.0))
    assert [at[i] for i in ids(page)] == [1_000.0]
    page = await store.list_records(RecordQuery(fallback_reason="timeout", since=2_500.0))
    assert [at[i] for i in ids(page)] == [3_000.0]
    assert (await store.list_records(RecordQuery(since=9_000.0))).records == []


async def test_list_records_pages_through_ties_with_the_cursor(store: StateStore) -> None:
    """Pages of `limit` follow one another through `next_before` with nothing repeated or
    skipped, even across many records updated at the same instant (ties go by id,
    descending); the last page has no cursor, also when it is exactly full."""
    tied = [record(state="deduped", updated_at=500.0) for _ in range(7)]
    others = [record(state="deduped", updated_at=at) for at in (100.0, 900.0)]
    other_state = record(state="sent", updated_at=500.0)
    await store.create_if_absent([*tied, *others, other_state])
    expected = [others[1].message_id]
    expected += sorted((r.message_id for r in tied), reverse=True)
    expected += [others[0].message_id]

    for query in (RecordQuery(state="deduped", limit=3), RecordQuery(state="deduped", limit=2)):
        seen: list[str] = []
        before: tuple[float, str] | None = None
        for _ in range(10):
            page = await store.list_records(replace(query, before=before))
            seen += ids(page)
            assert len(page.records) <= query.limit
            if page.next_before is None:
                break
            last = page.records[-1]
            assert page.next_before == (last.updated_at, last.message_id)
            before = page.next_before
        assert seen == expected, query

    exact = await store.list_records(RecordQuery(state="deduped", limit=len(expected)))
    assert (ids(exact), exact.next_before) == (expected, None)
    # A cursor with bounds: only what is strictly before it and within them.
    cursor = (500.0, expected[3])
    page = await store.list_records(RecordQuery(before=cursor, since=500.0, limit=50))
    at_500 = [r.message_id for r in [*tied, other_state]]
    assert ids(page) == sorted((i for i in at_500 if i < cursor[1]), reverse=True)
    page = await store.list_records(RecordQuery(before=cursor, until=500.0))
    assert ids(page) == [others[0].message_id]


# --- customer keys --------------------------------------------------------------------------


def customer(name: str) -> str:
    """A fresh customer key (32 hex digits, as `conversation_id` makes them)."""
    return uuid.uuid4().hex


async def test_a_customer_key_is_the_bsuid_hash_else_the_number_hash(store: StateStore) -> None:
    """With a BSUID's hash, that; with a number's alone, that (the key customers had before
    BSUIDs, so their stored memory stays reachable); with neither, nothing."""
    phone, user = customer("phone"), customer("user")
    assert await resolve_customer(store, None, user) == user
    assert await resolve_customer(store, phone, None) == phone
    assert await resolve_customer(store, None, None) == ""


async def test_a_number_with_memory_hands_it_to_its_bsuid(store: StateStore) -> None:
    """A customer known by number (their turns under its hash) who writes with number and
    BSUID: the turns move to the BSUID's key, the number becomes its alias, and a message
    with the number alone later finds the same customer."""
    phone, user = customer("phone"), customer("user")
    turns = [Turn("customer", "oi", 10.0), Turn("business", "olá", 11.0)]
    await append_turns(store, phone, turns, 86400, 10)

    assert await resolve_customer(store, phone, user) == user
    assert await store.recent_turns(user, 0.0, 10) == turns
    assert await store.recent_turns(phone, 0.0, 10) == []
    assert await resolve_customer(store, phone, None) == user
    assert await resolve_customer(store, phone, user) == user, "resolving again changes nothing"
    assert await store.recent_turns(user, 0.0, 10) == turns


async def test_a_bsuid_with_memory_keeps_its_own(store: StateStore) -> None:
    """When the BSUID's key has turns already, the number's are not moved over them."""
    phone, user = customer("phone"), customer("user")
    await append_turns(store, phone, [Turn("customer", "antigo", 1.0)], 86400, 10)
    await append_turns(store, user, [Turn("customer", "novo", 2.0)], 86400, 10)

    assert await resolve_customer(store, phone, user) == user
    assert await store.recent_turns(user, 0.0, 10) == [Turn("customer", "novo", 2.0)]
    assert await resolve_customer(store, phone, None) == user


async def test_a_changed_bsuid_moves_the_customer(store: StateStore) -> None:
    """move_customer: the turns follow to the new key, and the old BSUID and the number
    that stood for it both resolve to the new one; changing back makes no loop."""
    phone, old, new = customer("phone"), customer("old"), customer("new")
    await append_turns(store, old, [Turn("customer", "oi", 1.0)], 86400, 10)
    assert await resolve_customer(store, phone, old) == old

    await store.move_customer(old, new)

    assert await store.recent_turns(new, 0.0, 10) == [Turn("customer", "oi", 1.0)]
    assert await store.recent_turns(old, 0.0, 10) == []
    assert await resolve_customer(store, None, new) == new
    assert await resolve_customer(store, None, old) == new, "a late message of the old id"
    assert await resolve_customer(store, phone, None) == new

    await store.move_customer(new, old)
    assert await resolve_customer(store, None, old) == old
    assert await resolve_customer(store, None, new) == old
    assert await store.recent_turns(old, 0.0, 10) == [Turn("customer", "oi", 1.0)]


async def test_finish_step_resolves_the_customer_with_the_save(store: StateStore) -> None:
    """Asked to, finish_step resolves the customer key (moving a number's turns) only when
    it saves, and the record is saved and loaded with that key as its conversation."""
    phone, user = customer("phone"), customer("user")
    await append_turns(store, phone, [Turn("customer", "oi", 1.0)], 86400, 10)
    stored = record()
    await store.create_if_absent([stored])
    moved = replace(stored, state="deduped", version=1)
    request = CustomerRequest(phone, user)

    stale = await store.finish_step(
        StepCommit(
            replace(moved, version=5),
            4,
            LeaseHold("k:received", "a"),
            writes=Writes(customer=request),
        )
    )
    assert stale == StepSave(False)
    assert await resolve_customer(store, phone, None) == phone, "nothing resolved when stale"

    done = await store.finish_step(
        StepCommit(moved, 0, LeaseHold("k:received", "a"), writes=Writes(customer=request))
    )
    assert done == StepSave(True, customer=user)
    loaded = await store.get(stored.message_id)
    assert loaded == replace(moved, conversation=user)
    load = await store.lease_step("k:deduped", "a", 30, stored.message_id, turns=5)
    assert load == StepLoad(True, replace(moved, conversation=user), [Turn("customer", "oi", 1.0)])


# --- cost counters (per UTC day) -----------------------------------------------------------


async def test_a_billable_message_counts_once_in_its_day_whatever_its_statuses_repeat(
    store: StateStore,
) -> None:
    """count_billable adds `b:{category}` to the day of `at` the first time an outbound
    message is named, and nothing for its later statuses (sent, delivered, read each carry
    its pricing); another message counts on its own, in its own day."""
    now = time.time()
    first, second = new_wamid(), new_wamid()
    assert await store.count_billable(first, "service", now) is True
    assert await store.count_billable(first, "service", now + 1) is False
    assert await store.count_billable(first, "marketing", now + 2) is False
    assert await store.count_billable(second, "utility", now) is True
    assert await store.count_billable(new_wamid(), "service", now - DAY) is True

    assert await bucket(store, DAY, now) == {"b:service": 1, "b:utility": 1}
    assert await bucket(store, DAY, now - DAY) == {"b:service": 1}
    # Only the day buckets hold them: the console's minutes and hours are untouched.
    assert await bucket(store, MINUTE, now) == {}
    assert await bucket(store, HOUR, now) == {}


async def test_a_category_is_folded_into_a_counter_name(store: StateStore) -> None:
    """A category with odd characters cannot carry free text (or a separator) into the
    counters: it is folded to [a-z0-9_]."""
    now = time.time()
    assert await store.count_billable(new_wamid(), "Ser vice:x", now)
    assert await bucket(store, DAY, now) == {"b:ser_vice_x": 1}


async def test_an_llm_steps_save_adds_its_tokens_to_the_day(store: StateStore) -> None:
    """The transition that saves an LLM call (to llm1, llm2, llm3 or media) adds its input
    and output tokens to the day's `k:{step}:in` / `k:{step}:out`, by save and by
    finish_step alike; a stale save adds nothing, and neither does a later transition that
    carries the same results."""
    now = time.time()
    base, other = record(created_at=now), record(created_at=now)
    await store.create_if_absent([base, other])
    deduped = moved(base, "deduped", now)
    assert await store.save(deduped, expected_version=0)
    call = LLMCall(latency_ms=10.0, input_tokens=120, output_tokens=30, model="m")
    detected = moved(deduped, "llm1", now, results=replace(deduped.results, llm1=call))
    assert not await store.save(detected, expected_version=0)  # stale: nothing
    assert await store.save(detected, expected_version=1)
    drafted_call = LLMCall(input_tokens=200, output_tokens=0)
    drafted = moved(detected, "llm2", now, results=replace(detected.results, llm2=drafted_call))
    assert (await store.finish_step(StepCommit(drafted, 2, LeaseHold("k1", "a")))).saved
    assert await store.save(moved(drafted, "fallback", now, fallback_reason="x"), 3)

    other_deduped = moved(other, "deduped", now)
    assert await store.save(other_deduped, expected_version=0)
    other_call = LLMCall(input_tokens=5, output_tokens=7)
    other_detected = moved(
        other_deduped, "llm1", now, results=replace(other_deduped.results, llm1=other_call)
    )
    assert (await store.finish_step(StepCommit(other_detected, 1, LeaseHold("k2", "a")))).saved

    assert await bucket(store, DAY, now) == {
        "k:llm1:in": 125,
        "k:llm1:out": 37,
        "k:llm2:in": 200,
    }
    assert "k:llm1:in" not in await bucket(store, HOUR, now)


async def test_llm_calls_and_reply_authors_count_alike_on_every_store(store: StateStore) -> None:
    """The LLM calls a transition saved count by step, model asked for and outcome (with
    their time's bin), and a reply sent by who made it, in the minute and the hour of the
    save, by save and by finish_step alike: an answered call on its step's move, a failed
    one on `fall_back`; a replay's move to `fallback` and a stale save count nothing."""
    now = time.time()
    answered, failed, agent, ack = (record(created_at=now) for _ in range(4))
    agent = replace(agent, inbound=replace(agent.inbound, kind=AGENT_REPLY_KIND))
    await store.create_if_absent([answered, failed, agent, ack])

    ok = LLMCall(900.0, 10, 5, "gpt-4o-mini-2024-07-18", "gpt-4o-mini")
    deduped = moved(answered, "deduped", now)
    assert await store.save(deduped, expected_version=0)
    detected = moved(deduped, "llm1", now, results=replace(deduped.results, llm1=ok))
    assert not await store.save(detected, expected_version=0)  # stale: nothing
    assert await store.save(detected, expected_version=1)
    drafted = moved(detected, "llm2", now, results=replace(detected.results, llm2=ok))
    assert (await store.finish_step(StepCommit(drafted, 2, LeaseHold("h1", "a")))).saved
    chosen = moved(drafted, "llm3", now, results=replace(drafted.results, llm3=ok))
    assert await store.save(chosen, expected_version=3)
    queued = moved(chosen, "queued_outbound", now)
    assert await store.save(queued, expected_version=4)
    assert await store.save(moved(queued, "sent", now), expected_version=5)

    timed_out = LLMCall(10_000.0, 0, 0, "gpt-4o-mini", "gpt-4o-mini", "timeout")
    at_llm1 = moved(moved(failed, "deduped", now), "llm1", now)
    assert await store.save(at_llm1, expected_version=0)
    fell = moved(
        at_llm1,
        "fallback",
        now,
        trigger="fall_back",
        fallback_reason="timeout",
        results=replace(at_llm1.results, fallback_step="llm2", failed_call=timed_out),
    )
    assert (await store.finish_step(StepCommit(fell, 2, LeaseHold("h2", "a")))).saved
    dead = moved(fell, "failed", now)
    assert await store.save(dead, expected_version=3)
    replayed = moved(dead, "fallback", now, trigger="replay_reply")  # same failed call
    assert await store.save(replayed, expected_version=4)
    sent_template = moved(moved(replayed, "queued_outbound", now), "sent", now)
    assert await store.save(sent_template, expected_version=5)

    for other, reason in ((agent, None), (ack, HANDOFF_REASON)):
        sent = moved(moved(other, "queued_outbound", now), "sent", now, fallback_reason=reason)
        assert await store.save(sent, expected_version=0)

    expected = {
        "l:llm1:gpt_4o_mini:ok": 1,
        "l:llm2:gpt_4o_mini:ok": 1,
        "l:llm3:gpt_4o_mini:ok": 1,
        f"c:llm1:{duration_bin(900.0)}": 1,
        f"c:llm2:{duration_bin(900.0)}": 1,
        f"c:llm3:{duration_bin(900.0)}": 1,
        "l:llm2:gpt_4o_mini:timeout": 1,
        f"c:llm2:{duration_bin(10_000.0)}": 1,
        "r:llm": 1,
        "r:template": 1,
        "r:agent": 1,
        "r:handoff": 1,
    }
    for width in (MINUTE, HOUR):
        counters = await bucket(store, width, now)
        assert {k: n for k, n in counters.items() if k[:2] in ("l:", "c:", "r:")} == expected
    assert not [k for k in await bucket(store, DAY, now) if k[:2] in ("l:", "c:", "r:")]


async def test_day_buckets_come_from_counter_buckets_oldest_first(store: StateStore) -> None:
    """counter_buckets(DAY, since) returns the days from since's day, oldest first, and
    never one older than the days are kept."""
    now = time.time()
    for days_ago in (0, 2, 40):
        await store.count_billable(new_wamid(), "service", now - days_ago * DAY)
    days = await store.counter_buckets(DAY, now - 3 * DAY)
    assert [start for start, _ in days] == [bucket_of(now - 2 * DAY, DAY), bucket_of(now, DAY)]
    kept = await store.counter_buckets(DAY, 0.0)
    assert [start for start, _ in kept] == [start for start, _ in days]
