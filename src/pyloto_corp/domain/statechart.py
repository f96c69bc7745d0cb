"""The statechart: states and transitions, validated against the code and linted.

Errors name the file and line so a broken edit is found at start-up, not in production
(adapters/statechart_yaml.py reads the file and keeps the lines).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Literal

QueueName = Literal["inbound", "outbound"]
ANY_STATE = "*"  # key of `handlers` for triggers every non-terminal state can fire


class StatechartError(Exception):
    """The statechart file is invalid; the message starts with `path:line:`."""


@dataclass(frozen=True)
class StateSpec:
    """A state: what its step does, which queue runs it, whether it ends the machine."""

    name: str
    description: str
    queue: QueueName
    terminal: bool
    line: int


@dataclass(frozen=True)
class TransitionSpec:
    """An edge fired by `trigger` from `source` to `dest`."""

    trigger: str
    source: str
    dest: str
    description: str
    line: int
    manual: bool = False  # fired only by an operator use case (replay), never by a step


@dataclass(frozen=True)
class Statechart:
    """A validated statechart."""

    name: str
    initial: str
    states: Mapping[str, StateSpec]
    transitions: tuple[TransitionSpec, ...]
    path: str
    initial_line: int = 1

    def exits(self, state: str) -> list[TransitionSpec]:
        """Transitions leaving `state` (manual ones included)."""
        return [t for t in self.transitions if t.source == state]

    def step_exits(self, state: str) -> list[TransitionSpec]:
        """Transitions the step of `state` may fire (manual ones excluded)."""
        return [t for t in self.exits(state) if not t.manual]

    def is_terminal(self, state: str) -> bool:
        """Whether `state` ends the machine."""
        return self.states[state].terminal

    @property
    def open_states(self) -> list[str]:
        """Non-terminal states, in file order."""
        return [name for name, spec in self.states.items() if not spec.terminal]


def fail(path: str, line: int, message: str) -> StatechartError:
    """The error for `message` at `path:line`."""
    return StatechartError(f"{path}:{line}: {message}")


def validate(
    chart: Statechart,
    handlers: Mapping[str, Collection[str]],
    manual_triggers: Collection[str] = (),
) -> None:
    """Check the graph against itself and against the triggers the code handles.

    `handlers` maps a state to the triggers its step can fire; the `ANY_STATE` key lists
    triggers every non-terminal state can fire (such as dead-lettering). `manual_triggers`
    are those an operator use case fires: only they may mark a transition `manual: true`,
    and only manual transitions may leave a terminal state. The `ANY_STATE` triggers are
    the failure triggers of `lint`, which runs last.
    """
    if chart.initial not in chart.states:
        raise fail(
            chart.path, chart.initial_line, f"initial state '{chart.initial}' is not defined"
        )
    for state in handlers:
        if state != ANY_STATE and state not in chart.states:
            raise fail(
                chart.path, 1, f"the code has a step for state '{state}', which is not defined"
            )
    seen: set[tuple[str, str]] = set()
    for transition in chart.transitions:
        _check_transition(chart, transition, handlers, manual_triggers, seen)
    lint(chart, handlers.get(ANY_STATE, ()))


def _check_transition(
    chart: Statechart,
    transition: TransitionSpec,
    handlers: Mapping[str, Collection[str]],
    manual_triggers: Collection[str],
    seen: set[tuple[str, str]],
) -> None:
    for end in (transition.source, transition.dest):
        if end not in chart.states:
            raise fail(chart.path, transition.line, f"unknown state '{end}'")
    if chart.states[transition.source].terminal and not transition.manual:
        raise fail(
            chart.path, transition.line, f"terminal state '{transition.source}' cannot have exits"
        )
    key = (transition.trigger, transition.source)
    if key in seen:
        raise fail(
            chart.path,
            transition.line,
            f"trigger '{transition.trigger}' from '{transition.source}' is defined twice",
        )
    seen.add(key)
    if transition.manual:
        if transition.trigger not in manual_triggers:
            raise fail(
                chart.path,
                transition.line,
                f"manual trigger '{transition.trigger}' has no operator use case",
            )
        return
    handled = set(handlers.get(transition.source, ())) | set(handlers.get(ANY_STATE, ()))
    if transition.trigger not in handled:
        raise fail(
            chart.path,
            transition.line,
            f"trigger '{transition.trigger}' from '{transition.source}' has no handler",
        )


def lint(chart: Statechart, failure_triggers: Collection[str]) -> None:
    """Check that every message can get from the initial state to an end, and that every
    failure has an exit, naming the first state that breaks a rule:

    1. Every state is reachable from the initial state (manual transitions count: a state
       only an operator's replay leads to is still used).
    2. Every non-terminal state has a step exit, and a path of step exits to a terminal
       state: manual transitions do not count, the machine never fires them on its own.
    3. Every step can fail: each runs as a queued task that loads and saves its record, and
       a permanent error or the queue's last attempt makes the code fire a failure trigger
       (the `ANY_STATE` handlers: `dead_letter` → `failed` in inbound_message.yaml) from
       whatever state the record is in. So every non-terminal state has a step exit for
       each failure trigger, and it ends in a terminal state, so that a failed message is
       never run again without an operator. The LLM steps' `fall_back` → `fallback` is
       their own recovery, on top of this, not instead of it.
    """
    for name in chart.open_states:
        if not chart.step_exits(name):
            line = chart.states[name].line
            raise fail(chart.path, line, f"state '{name}' is not terminal but has no exits")
    reachable = _reachable(chart)
    for name, spec in chart.states.items():
        if name not in reachable:
            raise fail(
                chart.path, spec.line, f"state '{name}' is unreachable from '{chart.initial}'"
            )
    finishing = _finishing(chart)
    for name in chart.open_states:
        if name not in finishing:
            line = chart.states[name].line
            raise fail(chart.path, line, f"state '{name}' has no path to a terminal state")
    for name in chart.open_states:
        for trigger in sorted(failure_triggers):
            _check_failure_exit(chart, name, trigger)


def _check_failure_exit(chart: Statechart, state: str, trigger: str) -> None:
    exits = [t for t in chart.step_exits(state) if t.trigger == trigger]
    if not exits:
        raise fail(
            chart.path,
            chart.states[state].line,
            f"state '{state}' can fail but has no '{trigger}' exit "
            "(the code fires it from any state whose step fails)",
        )
    for transition in exits:
        if not chart.is_terminal(transition.dest):
            raise fail(
                chart.path,
                transition.line,
                f"failure trigger '{trigger}' from '{state}' must end in a terminal state, "
                f"not '{transition.dest}'",
            )


def _reachable(chart: Statechart) -> set[str]:
    found = {chart.initial}
    pending = deque([chart.initial])
    while pending:
        for transition in chart.exits(pending.popleft()):
            if transition.dest not in found:
                found.add(transition.dest)
                pending.append(transition.dest)
    return found


def _finishing(chart: Statechart) -> set[str]:
    """States with a path of step exits to a terminal state (terminal states included)."""
    found = {name for name, spec in chart.states.items() if spec.terminal}
    grew = True
    while grew:
        grew = False
        for transition in chart.transitions:
            if transition.manual or transition.source in found:
                continue
            if transition.dest in found:
                found.add(transition.source)
                grew = True
    return found
