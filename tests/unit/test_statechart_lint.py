"""The statechart lint: every state is used, every message can finish, every failure has an
exit. Each broken chart is refused at load time with `path:line:` and the state's name."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pyloto_corp.adapters.statechart_yaml import load_statechart
from pyloto_corp.bootstrap import STATECHART_FILE, load_chart, statechart_dir
from pyloto_corp.domain.statechart import ANY_STATE, StatechartError, lint
from tests.support.statecharts import line_of, load_error

PATH = "charts/mini.yaml"
HANDLERS = {
    "received": {"accept"},
    "working": {"finish", "fall_back"},
    "fallback": {"finish"},
    ANY_STATE: {"dead_letter"},
}

# The shape of inbound_message.yaml in miniature; each test breaks one rule in a copy.
MINI = textwrap.dedent(
    """\
    name: mini
    initial: received
    states:
      received:
        description: Stored.
      working:
        description: The step that may fall back.
      fallback:
        description: Template reply.
      done:
        terminal: true
      failed:
        terminal: true
    transitions:
      - trigger: accept
        source: received
        dest: working
      - trigger: finish
        source: [working, fallback]
        dest: done
      - trigger: fall_back
        source: working
        dest: fallback
      - trigger: dead_letter
        source: [received, working, fallback]
        dest: failed
    """
)


def error_of(text: str, handlers: dict[str, set[str]] | None = None) -> str:
    """The StatechartError message of loading `text`."""
    return load_error(text, PATH, HANDLERS if handlers is None else handlers)


def test_mini_chart_passes_the_lint() -> None:
    """The base of the broken variants below loads, so each fails for its one change."""
    chart = load_statechart(MINI, PATH, HANDLERS)
    assert chart.open_states == ["received", "working", "fallback"]


def test_shipped_statechart_passes_the_lint() -> None:
    """statecharts/inbound_message.yaml passes: every state is reachable from `received`,
    every open state can finish, and every open state has `dead_letter` → `failed`."""
    chart = load_chart()
    lint(chart, {"dead_letter"})
    for state in chart.open_states:
        assert ("dead_letter", "failed") in {(t.trigger, t.dest) for t in chart.step_exits(state)}


def test_unreachable_state_is_refused_at_its_definition() -> None:
    """A state no transition leads to from the initial state is named, at its own line."""
    text = MINI.replace("  done:\n", "  orphan:\n    description: Nobody comes here.\n  done:\n")
    text = text.replace("source: [received, working, fallback]", "source: [received, orphan]")
    text += "  - trigger: dead_letter\n    source: [working, fallback]\n    dest: failed\n"
    assert error_of(text) == (
        f"{PATH}:{line_of(text, 'orphan:')}: state 'orphan' is unreachable from 'received'"
    )


def test_state_whose_exits_only_loop_is_a_dead_end() -> None:
    """A non-terminal state whose step exits lead only round a loop is named, at its line:
    having exits is not enough, one path must end in a terminal state."""
    text = MINI.replace(
        "  done:\n",
        "  spin:\n    description: Around.\n  spun:\n    description: And around.\n  done:\n",
    )
    text += (
        "  - trigger: spin\n    source: working\n    dest: spin\n"
        "  - trigger: turn\n    source: [spin, spun]\n    dest: spun\n"
        "  - trigger: back\n    source: spun\n    dest: spin\n"
    )
    handlers = {**HANDLERS, "working": {"finish", "fall_back", "spin"}}
    handlers |= {"spin": {"turn"}, "spun": {"turn", "back"}}
    assert error_of(text, handlers) == (
        f"{PATH}:{line_of(text, 'spin:')}: state 'spin' has no path to a terminal state"
    )


def test_manual_exit_does_not_count_as_a_way_to_finish() -> None:
    """A state that reaches a terminal state only through an operator's manual transition is
    a dead end for the machine, which never fires a manual transition on its own."""
    text = MINI.replace("  done:\n", "  parked:\n    description: Waits.\n  done:\n")
    text += (
        "  - trigger: park\n    source: working\n    dest: parked\n"
        "  - trigger: stay\n    source: parked\n    dest: parked\n"
        "  - trigger: release\n    source: parked\n    dest: done\n    manual: true\n"
    )
    handlers = {**HANDLERS, "working": {"finish", "fall_back", "park"}, "parked": {"stay"}}
    with pytest.raises(StatechartError) as caught:
        load_statechart(text, PATH, handlers, manual_triggers={"release"})
    assert str(caught.value) == (
        f"{PATH}:{line_of(text, 'parked:')}: state 'parked' has no path to a terminal state"
    )


def test_failing_step_without_a_dead_letter_exit_is_refused() -> None:
    """Every step can fail (its task can run out of attempts), and the code then fires the
    failure trigger from the record's state: a state without that exit is named."""
    text = MINI.replace("source: [received, working, fallback]", "source: [received, working]")
    assert error_of(text) == (
        f"{PATH}:{line_of(text, 'fallback:')}: state 'fallback' can fail but has no "
        "'dead_letter' exit (the code fires it from any state whose step fails)"
    )


def test_fallback_edge_does_not_replace_the_dead_letter_exit() -> None:
    """`working` still falls back to `fallback`, but that is the LLM's own recovery: a store
    outage on its last attempt needs `dead_letter`, so its absence is refused."""
    text = MINI.replace("source: [received, working, fallback]", "source: [received, fallback]")
    message = error_of(text)
    assert message.startswith(f"{PATH}:{line_of(text, 'working:')}: state 'working' can fail")


def test_failure_exit_into_an_open_state_is_refused_at_its_transition() -> None:
    """A failure trigger must end in a terminal state, or a failed message would be run
    again with no operator asking; the error is at the transition's line."""
    text = MINI.replace("source: [received, working, fallback]", "source: [received, working]")
    text += "  - trigger: dead_letter\n    source: fallback\n    dest: working\n"
    assert error_of(text) == (
        f"{PATH}:{line_of(text, 'trigger: dead_letter', occurrence=2)}: failure trigger "
        "'dead_letter' from 'fallback' must end in a terminal state, not 'working'"
    )


SHIPPED = (statechart_dir() / STATECHART_FILE).read_text(encoding="utf-8")


def shipped_without_llm2_in(sources: str, tmp_path: Path) -> Path:
    """A copy of the shipped chart, in a statecharts/ folder, with `llm2` taken out of the
    transition whose `source:` line is `sources`."""
    assert sources in SHIPPED
    folder = tmp_path / "statecharts"
    folder.mkdir()
    path = folder / STATECHART_FILE
    path.write_text(SHIPPED.replace(sources, sources.replace(" llm2,", "")), encoding="utf-8")
    return path


def test_shipped_chart_without_a_dead_letter_exit_names_file_line_and_state(
    tmp_path: Path,
) -> None:
    """Taking `llm2` out of the shipped chart's dead-letter sources is refused by the
    service's own loader, which names statecharts/inbound_message.yaml, the line and state."""
    sources = (
        "source: [received, deduped, media, buffered, llm1, llm2, llm3, fallback,"
        " queued_outbound, sending]"
    )
    with pytest.raises(StatechartError) as caught:
        load_chart(shipped_without_llm2_in(sources, tmp_path))
    assert str(caught.value) == (
        f"statecharts/{STATECHART_FILE}:{line_of(SHIPPED, '  llm2:')}: state 'llm2' can fail "
        "but has no 'dead_letter' exit (the code fires it from any state whose step fails)"
    )


def test_a_step_event_without_its_transition_refuses_to_start_naming_both(
    tmp_path: Path,
) -> None:
    """LLM#3's step may fall back; a chart without `fall_back` from `llm2` is refused by the
    service's loader with the step, its state, the event and the missing trigger."""
    with pytest.raises(StatechartError) as caught:
        load_chart(
            shipped_without_llm2_in(
                "source: [deduped, media, buffered, llm1, llm2, llm3]", tmp_path
            )
        )
    assert str(caught.value) == (
        f"statecharts/{STATECHART_FILE}: step choose_message_type in 'llm2' may return "
        "FellBack, but the statechart has no 'fall_back' transition from 'llm2'"
    )
