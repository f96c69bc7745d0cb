"""Unit fixtures: the shipped statechart, one machine, fakes of our ports, record builders."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from pyloto_corp.application.advance import Advancer
from pyloto_corp.application.steps import StepContext
from pyloto_corp.bootstrap import load_chart
from pyloto_corp.domain.machine import LifecycleMachine
from pyloto_corp.domain.records import Record
from pyloto_corp.domain.replies import text_reply_body
from pyloto_corp.domain.results import Results
from pyloto_corp.domain.statechart import Statechart
from tests.support.records import inbound
from tests.unit.fakes import (
    TEMPLATES,
    FakeClock,
    FakeOutbox,
    FakeQueue,
    FakeStore,
    MakeRecord,
    PutRecord,
)


@pytest.fixture(scope="session")
def chart() -> Statechart:
    """The shipped statechart, validated against the code's steps."""
    return load_chart()


@pytest.fixture
def machine(chart: Statechart) -> LifecycleMachine:
    """One lifecycle machine, as bootstrap builds it."""
    return LifecycleMachine(chart)


@pytest.fixture
def clock() -> FakeClock:
    """A clock that moves only when a test says so."""
    return FakeClock()


@pytest.fixture
def store() -> FakeStore:
    """An empty in-memory store."""
    return FakeStore()


@pytest.fixture
def queue() -> FakeQueue:
    """A queue that keeps what was enqueued."""
    return FakeQueue()


@pytest.fixture
def outbox(store: FakeStore) -> FakeOutbox:
    """An outbox that records sends and sees the store at the moment of each send."""
    fake = FakeOutbox()
    fake.store = store
    return fake


@pytest.fixture
def context(store: FakeStore, outbox: FakeOutbox, clock: FakeClock) -> StepContext:
    """What steps may use, as one process among several (no sole-instance shortcut)."""
    return StepContext(
        store=store, outbox=outbox, clock=clock, templates=TEMPLATES, instance_id="instance-a"
    )


@pytest.fixture
def advancer(
    machine: LifecycleMachine, store: FakeStore, queue: FakeQueue, context: StepContext
) -> Advancer:
    """The advancer wired to the fakes."""
    return Advancer(machine, store, queue, context)


@pytest.fixture
def make_record(clock: FakeClock) -> MakeRecord:
    """Build a record for an inbound message of `kind`, in `state`, with field overrides."""

    def create(
        kind: str = "text",
        state: str = "received",
        text: str | None = "Olá, qual o horário de funcionamento?",
        **fields: Any,
    ) -> Record:
        message = inbound(text=text, kind=kind, timestamp=1_732_531_200)
        if isinstance(fields.get("results"), dict):  # the findings' fields, by name
            fields["results"] = Results(**fields["results"])
        if state in ("queued_outbound", "sending", "sent") and "reply" not in fields:
            # Records from queued_outbound on always carry the request body of their reply.
            fields["reply"] = text_reply_body(message, "Olá!")
        return replace(Record.received(message, clock()), state=state, **fields)

    return create


@pytest.fixture
def put_record(make_record: MakeRecord, store: FakeStore) -> PutRecord:
    """Build a record as `make_record` does and put it in the store, as a task will find it."""

    def create(**fields: Any) -> Record:
        record = make_record(**fields)
        store.put(record)
        return record

    return create
