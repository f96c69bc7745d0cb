"""The statechart loader: the shipped file loads; every broken edit names its file and line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pyloto_corp.adapters.statechart_yaml import load_statechart
from pyloto_corp.application.steps import HANDLED_TRIGGERS, STEPS
from pyloto_corp.bootstrap import STATECHART_FILE, load_chart, statechart_dir
from pyloto_corp.domain.statechart import ANY_STATE, StatechartError
from tests.support.statecharts import line_of, load_error

PATH = "charts/tiny.yaml"
HANDLERS = {"start": {"go", "skip"}, "middle": {"finish"}, ANY_STATE: {"abort"}}

# A small valid chart; each test below breaks one thing in a copy of it.
TINY = textwrap.dedent(
    """\
    name: tiny
    initial: start
    states:
      start:
        description: First step.
      middle:
        description: Second step.
        queue: outbound
      done:
        terminal: true
    transitions:
      - trigger: go
        source: start
        dest: middle
      - trigger: finish
        source: middle
        dest: done
      - trigger: abort
        source: [start, middle]
        dest: done
    """
)


def at(text: str, fragment: str, occurrence: int = 1) -> str:
    """The `path:line: ` prefix an error about that line of `text` starts with."""
    return f"{PATH}:{line_of(text, fragment, occurrence)}: "


def error_of(text: str, handlers: dict[str, set[str]] | None = None) -> str:
    """The StatechartError message for `text`."""
    return load_error(text, PATH, HANDLERS if handlers is None else handlers)


def test_tiny_chart_is_valid() -> None:
    """The base of the variants below loads, so each variant fails for its one change."""
    chart = load_statechart(TINY, PATH, HANDLERS)
    assert chart.initial == "start"
    assert chart.states["middle"].queue == "outbound"
    assert chart.states["start"].queue == "inbound"
    assert [(t.trigger, t.source, t.dest) for t in chart.exits("middle")] == [
        ("finish", "middle", "done"),
        ("abort", "middle", "done"),
    ]


def test_shipped_statechart_loads() -> None:
    """statecharts/inbound_message.yaml loads with the design's states and terminal ends."""
    chart = load_chart()
    assert chart.name == "inbound_message"
    assert chart.initial == "received"
    assert set(chart.states) == {
        "received", "deduped", "media", "llm1", "llm2", "llm3", "fallback",
        "queued_outbound", "sending", "sent", "failed", "ignored", "with_agent", "buffered",
        "merged",
    }  # fmt: skip
    assert {name for name, spec in chart.states.items() if spec.terminal} == {
        "sent",
        "failed",
        "ignored",
        "with_agent",
        "merged",
    }
    assert chart.states["queued_outbound"].queue == "outbound"
    assert chart.states["sending"].queue == "outbound"
    assert chart.states["llm1"].queue == "inbound"


def test_shipped_statechart_matches_the_steps() -> None:
    """Every open state has a step, and every step belongs to an open state."""
    chart = load_chart()
    assert set(STEPS) == set(chart.open_states)
    assert set(HANDLED_TRIGGERS) - {ANY_STATE} == set(chart.open_states)


def test_shipped_statechart_lets_every_open_state_fall_to_failed() -> None:
    """Dead-lettering is possible from every non-terminal state."""
    chart = load_chart()
    for state in chart.open_states:
        assert ("dead_letter", "failed") in {(t.trigger, t.dest) for t in chart.exits(state)}


def test_invalid_yaml_names_the_broken_line() -> None:
    """A YAML syntax error is reported at the line the parser stopped on."""
    text = TINY.replace("    queue: outbound", "    queue: outbound: inbound")
    message = error_of(text)
    assert message.startswith(at(text, "queue: outbound: inbound") + "invalid YAML")


def test_tab_indentation_names_the_line() -> None:
    """A tab in the indentation is invalid YAML at its own line."""
    text = TINY.replace("    terminal: true", "\tterminal: true")
    assert error_of(text).startswith(at(text, chr(9)) + "invalid YAML")


def test_empty_file_is_refused() -> None:
    """An empty file is an error at line 1, not an empty machine."""
    assert error_of("") == f"{PATH}:1: the file is empty"


def test_terminal_state_with_exits_names_the_transition() -> None:
    """A transition leaving a terminal state fails at that transition's line."""
    text = TINY + "  - trigger: go\n    source: done\n    dest: start\n"
    message = error_of(text, {**HANDLERS, "done": {"go"}})
    assert (
        message == at(text, "trigger: go", occurrence=2) + "terminal state 'done' cannot have exits"
    )


RETRY = "  - trigger: retry\n    source: done\n    dest: start\n"


def test_manual_exit_from_a_terminal_state_is_allowed() -> None:
    """A `manual: true` transition the operator code knows may leave a terminal state; the
    state stays terminal and the transition is not one its (absent) step may fire."""
    text = TINY + RETRY + "    manual: true\n"
    chart = load_statechart(text, PATH, HANDLERS, manual_triggers={"retry"})
    [retry] = chart.exits("done")
    assert (retry.trigger, retry.dest, retry.manual) == ("retry", "start", True)
    assert chart.is_terminal("done")
    assert chart.step_exits("done") == []
    assert "done" not in chart.open_states


def test_non_manual_exit_from_a_terminal_state_is_still_an_error() -> None:
    """Without `manual: true` the same transition fails at its line, even if its trigger is
    a known manual one."""
    text = TINY + RETRY
    with pytest.raises(StatechartError) as caught:
        load_statechart(text, PATH, HANDLERS, manual_triggers={"retry"})
    expected = at(text, "trigger: retry") + "terminal state 'done' cannot have exits"
    assert str(caught.value) == expected


def test_only_manual_exits_leave_an_open_state_stuck() -> None:
    """A non-terminal state whose only exits are manual has no exit its step can take."""
    text = TINY.replace("dest: middle", "dest: limbo").replace(
        "  done:\n", "  limbo:\n    description: Stuck.\n  done:\n"
    )
    text += "  - trigger: retry\n    source: limbo\n    dest: done\n    manual: true\n"
    with pytest.raises(StatechartError) as caught:
        load_statechart(text, PATH, HANDLERS, manual_triggers={"retry"})
    assert (
        str(caught.value) == at(text, "limbo:") + "state 'limbo' is not terminal but has no exits"
    )


def test_shipped_statechart_replays_failed_through_manual_triggers() -> None:
    """`failed` stays terminal; its only exits are the manual replay triggers."""
    chart = load_chart()
    assert chart.is_terminal("failed")
    assert {(t.trigger, t.dest, t.manual) for t in chart.exits("failed")} == {
        ("replay_send", "queued_outbound", True),
        ("replay_reply", "fallback", True),
    }
    assert all(not t.manual for state in chart.open_states for t in chart.exits(state))


# Each case: a copy of TINY broken by one edit, the line the error must name (a fragment of
# that line and which copy of the fragment), and what the error says after `path:line: `.
@pytest.mark.parametrize(
    ("text", "fragment", "occurrence", "problem"),
    [
        # A transition into an undefined state fails at the line where that transition starts.
        pytest.param(
            TINY.replace("dest: middle", "dest: midle"),
            "trigger: go",
            1,
            "unknown state 'midle'",
            id="unknown_destination_state_names_its_transition",
        ),
        # A misspelt state inside a `source` list fails at its transition's line.
        pytest.param(
            TINY.replace("source: [start, middle]", "source: [start, midle]"),
            "trigger: abort",
            1,
            "unknown state 'midle'",
            id="unknown_source_state_in_a_list_names_its_transition",
        ),
        # A state no transition leads to fails at the line where the state is defined.
        pytest.param(
            TINY.replace("  done:\n", "  orphan:\n    terminal: true\n  done:\n"),
            "orphan:",
            1,
            "state 'orphan' is unreachable from 'start'",
            id="unreachable_state_names_its_definition",
        ),
        # A non-terminal state with no way out fails at the line where it is defined.
        pytest.param(
            TINY.replace("dest: middle", "dest: limbo").replace(
                "  done:\n", "  limbo:\n    description: Stuck.\n  done:\n"
            ),
            "limbo:",
            1,
            "state 'limbo' is not terminal but has no exits",
            id="open_state_without_exits_names_its_definition",
        ),
        # A manual transition whose trigger no operator use case fires fails at its line.
        pytest.param(
            TINY + RETRY + "    manual: true\n",
            "trigger: retry",
            1,
            "manual trigger 'retry' has no operator use case",
            id="manual_trigger_unknown_to_the_code_names_its_line",
        ),
        # `manual: maybe` is refused at its line.
        pytest.param(
            TINY + RETRY + "    manual: maybe\n",
            "manual: maybe",
            1,
            "manual must be true or false",
            id="manual_flag_must_be_a_boolean",
        ),
        # A trigger the code cannot fire from its source state fails at its transition's line.
        pytest.param(
            TINY + "  - trigger: teleport\n    source: start\n    dest: done\n",
            "trigger: teleport",
            1,
            "trigger 'teleport' from 'start' has no handler",
            id="trigger_without_handler_names_the_transition",
        ),
        # A handler for `finish` in `middle` does not cover `finish` fired from `start`.
        pytest.param(
            TINY + "  - trigger: finish\n    source: start\n    dest: done\n",
            "trigger: finish",
            2,
            "trigger 'finish' from 'start' has no handler",
            id="trigger_handled_only_by_another_state_is_refused",
        ),
        # The same trigger defined twice from one state fails at the second definition.
        pytest.param(
            TINY + "  - trigger: go\n    source: start\n    dest: done\n",
            "trigger: go",
            2,
            "trigger 'go' from 'start' is defined twice",
            id="duplicate_trigger_from_one_source_names_the_second_definition",
        ),
        # A source list repeating an existing (trigger, source) pair is a duplicate too.
        pytest.param(
            TINY.replace("source: [start, middle]", "source: [start, middle, start]"),
            "trigger: abort",
            1,
            "trigger 'abort' from 'start' is defined twice",
            id="duplicate_trigger_hidden_in_a_source_list_is_found",
        ),
        # A misspelt key inside a state fails at the line where the state is defined.
        pytest.param(
            TINY.replace("    terminal: true", "    terminal: true\n    colour: red"),
            "done:",
            1,
            "state 'done': unknown key(s) ['colour']",
            id="unknown_key_in_a_state_names_the_state",
        ),
        # A misspelt key inside a transition fails at the line where the transition starts.
        pytest.param(
            TINY.replace(
                "dest: done\n  - trigger: abort", "dest: done\n    guard: x\n  - trigger: abort"
            ),
            "trigger: finish",
            1,
            "transition: unknown key(s) ['guard']",
            id="unknown_key_in_a_transition_names_the_transition",
        ),
        # A misspelt top-level key (here `transition` for `transitions`) fails at its own line.
        pytest.param(
            TINY.replace("transitions:", "transition:"),
            "transition:",
            1,
            "unknown top-level key 'transition'",
            id="unknown_top_level_key_names_its_line",
        ),
        # An `initial` naming no state fails at the `initial:` line.
        pytest.param(
            "# A chart with a comment first.\n" + TINY.replace("initial: start", "initial: begin"),
            "initial: begin",
            1,
            "initial state 'begin' is not defined",
            id="undefined_initial_state_names_the_initial_line",
        ),
        # Two states with one name fail at the second, rather than one silently winning.
        pytest.param(
            TINY.replace("  done:\n", "  middle: {}\n  done:\n"),
            "middle:",
            2,
            "state 'middle' is defined twice",
            id="state_defined_twice_names_the_second_definition",
        ),
        # `terminal: yes` is refused at its line rather than read as false.
        pytest.param(
            TINY.replace("terminal: true", "terminal: yes"),
            "terminal: yes",
            1,
            "terminal must be true or false",
            id="terminal_flag_must_be_a_boolean",
        ),
        # Only the two queues of the deploy guide can carry a state's step.
        pytest.param(
            TINY.replace("queue: outbound", "queue: express"),
            "queue: express",
            1,
            "state 'middle': queue must be inbound or outbound",
            id="unknown_queue_names_its_line",
        ),
    ],
)
def test_a_broken_edit_is_named_at_its_line(
    text: str, fragment: str, occurrence: int, problem: str
) -> None:
    """The error is exactly `path:line: problem`, on the line that holds the mistake."""
    assert error_of(text) == at(text, fragment, occurrence) + problem


def test_step_for_an_undefined_state_is_refused() -> None:
    """Code that has a step for a state missing from the file fails at start-up."""
    message = error_of(TINY, {**HANDLERS, "archived": {"go"}})
    assert message.startswith(f"{PATH}:")
    assert "'archived'" in message


def _shipped_copy(tmp_path: Path, extra: str) -> Path:
    """A copy of the shipped chart with `extra` appended, in a folder named statecharts."""
    folder = tmp_path / "statecharts"
    folder.mkdir()
    path = folder / STATECHART_FILE
    shipped = (statechart_dir() / STATECHART_FILE).read_text(encoding="utf-8")
    path.write_text(shipped + extra, encoding="utf-8")
    return path


def test_load_chart_error_names_statecharts_file_and_line(tmp_path: Path) -> None:
    """An edit of the shipped file that the code cannot handle names statecharts/… and line."""
    path = _shipped_copy(
        tmp_path, "  - trigger: skip_ahead\n    source: received\n    dest: sent\n"
    )
    with pytest.raises(StatechartError) as caught:
        load_chart(path)
    text = path.read_text(encoding="utf-8")
    assert str(caught.value) == (
        f"statecharts/{STATECHART_FILE}:{line_of(text, 'trigger: skip_ahead')}: "
        "trigger 'skip_ahead' from 'received' has no handler"
    )


def test_load_chart_names_a_file_outside_statecharts_by_its_path(tmp_path: Path) -> None:
    """A chart elsewhere is named by its full path, so the message leads to the right file."""
    path = tmp_path / "custom.yaml"
    path.write_text(TINY.replace("initial: start", "initial: nowhere"), encoding="utf-8")
    with pytest.raises(StatechartError) as caught:
        load_chart(path)
    assert str(caught.value).startswith(f"{path}:2: ")
