"""Load and validate a statechart file: the single description of states and transitions.

Errors name the file and line so a broken edit is found at start-up, not in production.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Literal

import yaml

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


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


class _Reader:
    """Turns YAML nodes into specs, keeping line numbers for error messages."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, node: yaml.Node | int, message: str) -> StatechartError:
        line = node if isinstance(node, int) else _line(node)
        return StatechartError(f"{self.path}:{line}: {message}")

    def mapping(self, node: yaml.Node, what: str) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping")
        result: dict[str, yaml.Node] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                raise self.fail(key, f"{what} keys must be plain names")
            if key.value in result:
                raise self.fail(key, f"{what}: duplicate key '{key.value}'")
            result[key.value] = value
        return result

    def scalar(self, node: yaml.Node, what: str) -> str:
        if not isinstance(node, yaml.ScalarNode) or not node.value:
            raise self.fail(node, f"{what} must be a non-empty name")
        return str(node.value)

    def names(self, node: yaml.Node, what: str) -> list[str]:
        if isinstance(node, yaml.SequenceNode):
            return [self.scalar(item, what) for item in node.value]
        return [self.scalar(node, what)]

    def flag(self, node: yaml.Node | None, what: str) -> bool:
        if node is None:
            return False
        value = self.scalar(node, what)
        if value not in ("true", "false"):
            raise self.fail(node, f"{what} must be true or false")
        return value == "true"

    def state(self, name: str, node: yaml.Node, key_line: int) -> StateSpec:
        fields = {} if _is_null(node) else self.mapping(node, f"state '{name}'")
        unknown = set(fields) - {"description", "queue", "terminal"}
        if unknown:
            raise self.fail(key_line, f"state '{name}': unknown key(s) {sorted(unknown)}")
        queue = self.scalar(fields["queue"], "queue") if "queue" in fields else "inbound"
        if queue not in ("inbound", "outbound"):
            raise self.fail(fields["queue"], f"state '{name}': queue must be inbound or outbound")
        description = (
            self.scalar(fields["description"], "description") if "description" in fields else ""
        )
        terminal = self.flag(fields.get("terminal"), "terminal")
        return StateSpec(name, description, queue, terminal, key_line)  # type: ignore[arg-type]

    def transitions(self, node: yaml.Node) -> list[TransitionSpec]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, "transitions must be a list")
        result = []
        for item in node.value:
            fields = self.mapping(item, "transition")
            for required in ("trigger", "source", "dest"):
                if required not in fields:
                    raise self.fail(item, f"transition without '{required}'")
            unknown = set(fields) - {"trigger", "source", "dest", "description", "manual"}
            if unknown:
                raise self.fail(item, f"transition: unknown key(s) {sorted(unknown)}")
            trigger = self.scalar(fields["trigger"], "trigger")
            dest = self.scalar(fields["dest"], "dest")
            text = fields.get("description")
            description = self.scalar(text, "description") if text is not None else ""
            manual = self.flag(fields.get("manual"), "manual")
            for source in self.names(fields["source"], "source"):
                result.append(
                    TransitionSpec(trigger, source, dest, description, _line(item), manual)
                )
        return result


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")


_TOP_LEVEL_KEYS = ("name", "initial", "states", "transitions")
# libyaml's parser when PyYAML was built with it (its wheels are): a tenth of the pure-Python
# parser's time, with the same nodes and line marks.
_LOADER = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader


def parse_statechart(text: str, path: str) -> Statechart:
    """Parse the file's structure (names, keys, types) without checking the graph."""
    reader = _Reader(path)
    try:
        root = yaml.compose(text, Loader=_LOADER)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise reader.fail(line, f"invalid YAML: {getattr(error, 'problem', error)}") from None
    if root is None:
        raise reader.fail(1, "the file is empty")
    top = reader.mapping(root, "the statechart")
    for key, _ in root.value:
        if key.value not in _TOP_LEVEL_KEYS:
            raise reader.fail(key, f"unknown top-level key '{key.value}'")
    for required in _TOP_LEVEL_KEYS:
        if required not in top:
            raise reader.fail(root, f"missing top-level key '{required}'")
    states: dict[str, StateSpec] = {}
    for key, value in _pairs(reader, top["states"]):
        name = reader.scalar(key, "state name")
        if name in states:
            raise reader.fail(key, f"state '{name}' is defined twice")
        states[name] = reader.state(name, value, _line(key))
    return Statechart(
        name=reader.scalar(top["name"], "name"),
        initial=reader.scalar(top["initial"], "initial"),
        states=states,
        transitions=tuple(reader.transitions(top["transitions"])),
        path=path,
        initial_line=_line(top["initial"]),
    )


def _pairs(reader: _Reader, node: yaml.Node) -> list[tuple[yaml.Node, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        raise reader.fail(node, "states must be a mapping of name to definition")
    return list(node.value)


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
    reader = _Reader(chart.path)
    if chart.initial not in chart.states:
        raise reader.fail(chart.initial_line, f"initial state '{chart.initial}' is not defined")
    for state in handlers:
        if state != ANY_STATE and state not in chart.states:
            raise reader.fail(1, f"the code has a step for state '{state}', which is not defined")
    seen: set[tuple[str, str]] = set()
    for transition in chart.transitions:
        _check_transition(reader, chart, transition, handlers, manual_triggers, seen)
    lint(chart, handlers.get(ANY_STATE, ()))


def _check_transition(
    reader: _Reader,
    chart: Statechart,
    transition: TransitionSpec,
    handlers: Mapping[str, Collection[str]],
    manual_triggers: Collection[str],
    seen: set[tuple[str, str]],
) -> None:
    for end in (transition.source, transition.dest):
        if end not in chart.states:
            raise reader.fail(transition.line, f"unknown state '{end}'")
    if chart.states[transition.source].terminal and not transition.manual:
        raise reader.fail(
            transition.line, f"terminal state '{transition.source}' cannot have exits"
        )
    key = (transition.trigger, transition.source)
    if key in seen:
        raise reader.fail(
            transition.line,
            f"trigger '{transition.trigger}' from '{transition.source}' is defined twice",
        )
    seen.add(key)
    if transition.manual:
        if transition.trigger not in manual_triggers:
            raise reader.fail(
                transition.line,
                f"manual trigger '{transition.trigger}' has no operator use case",
            )
        return
    handled = set(handlers.get(transition.source, ())) | set(handlers.get(ANY_STATE, ()))
    if transition.trigger not in handled:
        raise reader.fail(
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
    reader = _Reader(chart.path)
    for name in chart.open_states:
        if not chart.step_exits(name):
            line = chart.states[name].line
            raise reader.fail(line, f"state '{name}' is not terminal but has no exits")
    reachable = _reachable(chart)
    for name, spec in chart.states.items():
        if name not in reachable:
            raise reader.fail(spec.line, f"state '{name}' is unreachable from '{chart.initial}'")
    finishing = _finishing(chart)
    for name in chart.open_states:
        if name not in finishing:
            line = chart.states[name].line
            raise reader.fail(line, f"state '{name}' has no path to a terminal state")
    for name in chart.open_states:
        for trigger in sorted(failure_triggers):
            _check_failure_exit(reader, chart, name, trigger)


def _check_failure_exit(reader: _Reader, chart: Statechart, state: str, trigger: str) -> None:
    exits = [t for t in chart.step_exits(state) if t.trigger == trigger]
    if not exits:
        raise reader.fail(
            chart.states[state].line,
            f"state '{state}' can fail but has no '{trigger}' exit "
            "(the code fires it from any state whose step fails)",
        )
    for transition in exits:
        if not chart.is_terminal(transition.dest):
            raise reader.fail(
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


def load_statechart(
    text: str,
    path: str,
    handlers: Mapping[str, Collection[str]],
    manual_triggers: Collection[str] = (),
) -> Statechart:
    """Parse and validate a statechart, or raise StatechartError naming the line."""
    chart = parse_statechart(text, path)
    validate(chart, handlers, manual_triggers)
    return chart
