"""The statechart file: YAML read into the domain's statechart, keeping line numbers for
the errors, then validated."""

from __future__ import annotations

from collections.abc import Collection, Mapping

import yaml

from pyloto_corp.domain.statechart import (
    Statechart,
    StatechartError,
    StateSpec,
    TransitionSpec,
    validate,
)


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
