"""LifecycleMachine: the statechart's transitions, through one shared `transitions` Machine."""

from __future__ import annotations

import itertools

import pytest

from pyloto_corp.domain.machine import IllegalTransition, LifecycleMachine
from pyloto_corp.domain.statechart import Statechart


def test_every_statechart_transition_reaches_its_destination(
    machine: LifecycleMachine, chart: Statechart
) -> None:
    """Firing each (source, trigger) of the chart lands in the chart's destination."""
    assert chart.transitions, "the shipped chart has transitions"
    for transition in chart.transitions:
        assert machine.fire(transition.source, transition.trigger) == transition.dest


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (["accept", "detect_event", "draft_reply", "choose_message_type", "queue_reply",
          "claim_send", "send"],
         ["deduped", "llm1", "llm2", "llm3", "queued_outbound", "sending", "sent"]),
        (["accept", "fall_back", "queue_reply", "claim_send", "send"],
         ["deduped", "fallback", "queued_outbound", "sending", "sent"]),
        (["accept", "fall_back", "queue_reply", "claim_send", "release_send"],
         ["deduped", "fallback", "queued_outbound", "sending", "queued_outbound"]),
        (["accept", "detect_event", "draft_reply", "fall_back", "queue_reply"],
         ["deduped", "llm1", "llm2", "fallback", "queued_outbound"]),
        (["ignore"], ["ignored"]),
        (["accept", "detect_event", "dead_letter"], ["deduped", "llm1", "failed"]),
    ],
)  # fmt: skip
def test_paths_through_the_lifecycle(
    machine: LifecycleMachine, path: list[str], expected: list[str]
) -> None:
    """Chained triggers walk the record through the expected states."""
    state, reached = "received", []
    for trigger in path:
        state = machine.fire(state, trigger)
        reached.append(state)
    assert reached == expected


@pytest.mark.parametrize(
    ("state", "trigger"),
    [
        ("received", "send"),  # skipping every step
        ("deduped", "queue_reply"),  # queuing a reply nobody drafted
        ("fallback", "fall_back"),  # falling back twice
        ("queued_outbound", "fall_back"),  # after the reply is queued there is no fallback
        ("sent", "send"),  # sending again
        ("sent", "dead_letter"),  # a terminal state has no exits
        ("failed", "accept"),
        ("ignored", "accept"),
        ("received", "no_such_trigger"),
        ("received", "to_sent"),  # transitions' auto-transitions are off
    ],
)
def test_illegal_transitions_raise(machine: LifecycleMachine, state: str, trigger: str) -> None:
    """A trigger the chart does not allow from the state raises IllegalTransition."""
    with pytest.raises(IllegalTransition, match=f"'{trigger}' is not allowed from '{state}'"):
        machine.fire(state, trigger)


def test_every_trigger_not_in_the_chart_for_a_state_is_illegal(
    machine: LifecycleMachine, chart: Statechart
) -> None:
    """Exactly the chart's (source, trigger) pairs are allowed; every other pair is refused."""
    triggers = {t.trigger for t in chart.transitions}
    allowed = {(t.source, t.trigger) for t in chart.transitions}
    for state, trigger in itertools.product(chart.states, triggers):
        if (state, trigger) in allowed:
            continue
        with pytest.raises(IllegalTransition):
            machine.fire(state, trigger)


def test_one_machine_serves_thousands_of_records(machine: LifecycleMachine) -> None:
    """Thousands of transitions, legal and illegal, reuse one Machine and leave no model on it."""
    shared = machine._machine
    walk = [
        "accept", "detect_event", "draft_reply", "choose_message_type", "queue_reply",
        "claim_send", "send",
    ]  # fmt: skip
    finished = 0
    for _ in range(1000):
        state = "received"
        for trigger in walk:
            state = machine.fire(state, trigger)
        with pytest.raises(IllegalTransition):
            machine.fire(state, "send")
        finished += state == "sent"
    assert finished == 1000
    assert machine._machine is shared
    assert shared.models == []


def test_records_do_not_share_state(machine: LifecycleMachine) -> None:
    """Firing for one record never moves another: each call starts from the state it is given."""
    assert machine.fire("received", "accept") == "deduped"
    assert machine.fire("llm2", "choose_message_type") == "llm3"
    assert machine.fire("received", "ignore") == "ignored"
    assert machine._machine.models == []


def test_remembered_answers_are_the_machines_every_time(chart: Statechart) -> None:
    """Asking the same pair again gives the same answer: a legal pair its destination, an
    illegal one IllegalTransition again (a remembered refusal is not a pass)."""
    machine = LifecycleMachine(chart)
    for _ in range(3):
        assert machine.fire("received", "accept") == "deduped"
        with pytest.raises(IllegalTransition, match="'send' is not allowed from 'received'"):
            machine.fire("received", "send")
