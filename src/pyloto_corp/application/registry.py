"""The step registry: each step declares, where it is defined, the state it runs in and the
events it may return; the statechart is checked against these declarations at start-up."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from pyloto_corp.application.step_context import StepContext
from pyloto_corp.domain.events import DeadLettered, Event, FellBack, HeldForAgent, Merged
from pyloto_corp.domain.records import Record
from pyloto_corp.domain.statechart import ANY_STATE, Statechart

Step = Callable[[Record, StepContext], Awaitable[Event]]
S = TypeVar("S", bound=Callable[..., Awaitable[Event]])


@dataclass(frozen=True)
class StepSpec:
    """One state's step and the events it may return; `reads_turns`: it reads the
    conversation's last turns (loaded with the record)."""

    state: str
    run: Step
    emits: tuple[type[Event], ...]
    reads_turns: bool = False


REGISTRY: dict[str, StepSpec] = {}

# States whose step the conversation's gate runs before (application/handoff.py): those a
# bot reply goes through until its send is claimed. The gate may hold the message for an
# agent instead, and where the customer's text is first read (or LLM#1's event), hand the
# conversation to a person with the acknowledgment (a fallback). From `buffered` on, a
# newer message of the same customer supersedes the message (application/bursts.py).
BUFFERED = "buffered"
GATED_STATES = (
    "deduped",
    "media",
    BUFFERED,
    "llm1",
    "llm2",
    "llm3",
    "fallback",
    "queued_outbound",
)
SUPERSEDED_STATES = GATED_STATES[2:]


def _gate_events(state: str) -> tuple[type[Event], ...]:
    events: tuple[type[Event], ...] = (HeldForAgent,)
    if state in ("deduped", "media", "llm1"):
        events += (FellBack,)
    if state in SUPERSEDED_STATES:
        events += (Merged,)
    return events


_GATE_EVENTS: dict[str, tuple[type[Event], ...]] = {
    state: _gate_events(state) for state in GATED_STATES
}


def step(state: str, *emits: type[Event], reads_turns: bool = False) -> Callable[[S], S]:
    """Register the decorated function as the step of `state`, returning `emits`."""

    def register(run: S) -> S:
        if state in REGISTRY:
            raise RuntimeError(f"state '{state}' already has a step: {REGISTRY[state].run}")
        REGISTRY[state] = StepSpec(state, run, emits, reads_turns)
        return run

    return register


def handled_triggers() -> Mapping[str, frozenset[str]]:
    """The triggers each state's step can fire (and, from any state, the Advancer's dead
    letter): every step transition of the statechart must be one of them."""
    handled = {
        state: frozenset(event.trigger for event in (*spec.emits, *_GATE_EVENTS.get(state, ())))
        for state, spec in REGISTRY.items()
    }
    return {**handled, ANY_STATE: frozenset({DeadLettered.trigger})}


def undeclared_in_chart(chart: Statechart) -> list[str]:
    """What the steps may return that the statechart has no transition for, each naming the
    step, its state, the event and the trigger (empty when the two agree)."""
    exits = {(t.source, t.trigger) for t in chart.transitions}
    problems = []
    for state, spec in sorted(REGISTRY.items()):
        if state not in chart.states:
            problems.append(f"step {spec.run.__name__} runs in '{state}', which is no state")
            continue
        problems.extend(
            f"step {spec.run.__name__} in '{state}' may return {event.__name__}, but the "
            f"statechart has no '{event.trigger}' transition from '{state}'"
            for event in (*spec.emits, *_GATE_EVENTS.get(state, ()))
            if (state, event.trigger) not in exits
        )
    return problems
