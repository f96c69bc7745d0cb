"""The conversation's rules: keywords, the window, its statechart and the mode changes it
allows."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyloto_corp.adapters.statechart_yaml import parse_statechart
from pyloto_corp.application.conversations import ModeRules
from pyloto_corp.bootstrap import CONVERSATION_CHART_FILE, load_chart, statechart_dir
from pyloto_corp.domain.conversation import (
    BOT,
    DEFAULT_HANDOFF_KEYWORDS,
    HUMAN,
    WAITING_HUMAN,
    WINDOW_SECONDS,
    Conversation,
    Keywords,
    check_chart,
)
from pyloto_corp.domain.machine import IllegalTransition, LifecycleMachine
from pyloto_corp.domain.statechart import StatechartError
from pyloto_corp.domain.writes import ConversationWrite

CHART = statechart_dir() / CONVERSATION_CHART_FILE


@pytest.mark.parametrize(
    "text",
    [
        "Quero falar com um ATENDENTE!",
        "quero falar com uma pessoa, por favor",
        "Posso falar com alguém?",
        "atendimento   humano",
        "atendente",
    ],
)
def test_the_default_keywords_match_whole_words_case_and_accents_aside(text: str) -> None:
    assert Keywords.of(DEFAULT_HANDOFF_KEYWORDS).match(text) is not None


@pytest.mark.parametrize(
    "text", ["atendentes trabalham até as 18h?", "desumano esse preço", "", None, "pessoal"]
)
def test_a_keyword_inside_another_word_does_not_match(text: str | None) -> None:
    assert Keywords.of(DEFAULT_HANDOFF_KEYWORDS).match(text) is None


def test_no_keywords_match_nothing() -> None:
    assert Keywords.of([]).match("atendente") is None
    assert Keywords.of([" ", ""]).phrases == ()


def test_the_window_closes_24_hours_after_the_customer_wrote() -> None:
    conversation = Conversation("k", customer_at=1_000.0)
    assert conversation.window_closes_at == 1_000.0 + WINDOW_SECONDS
    assert conversation.window_open(1_000.0 + WINDOW_SECONDS - 1)
    assert not conversation.window_open(1_000.0 + WINDOW_SECONDS)
    assert Conversation("k").window_closes_at == 0.0  # the customer never wrote


def test_the_shipped_conversation_chart_loads_with_the_three_modes() -> None:
    chart = load_chart(CHART)
    assert chart.initial == BOT
    assert set(chart.states) == {BOT, WAITING_HUMAN, HUMAN}


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (("dest: waiting_human", "dest: human"), "'request_human' leads to 'waiting_human'"),
        (("trigger: release", "trigger: give_back"), "never fires 'give_back'"),
        (("initial: bot", "initial: human"), "the modes are"),
    ],
)
def test_a_chart_that_disagrees_with_the_code_is_refused(
    edit: tuple[str, str], problem: str
) -> None:
    text = Path(CHART).read_text(encoding="utf-8").replace(*edit, 1)
    with pytest.raises(StatechartError, match=problem):
        check_chart(parse_statechart(text, "statecharts/conversation.yaml"))


def test_mode_changes_are_checked_against_the_chart() -> None:
    rules = ModeRules(LifecycleMachine(load_chart(CHART)))
    request = ConversationWrite(expect_mode=BOT, mode=WAITING_HUMAN, reason="keyword")
    assert rules.check(BOT, request) == "request_human"
    release = ConversationWrite(mode=BOT, reason="agent_release")
    assert rules.check(HUMAN, release) == "release"
    with pytest.raises(IllegalTransition):
        rules.check(BOT, release)  # the bot cannot be given back what it has
    with pytest.raises(IllegalTransition):
        rules.check(HUMAN, ConversationWrite(mode=HUMAN, reason="operator_takeover"))
    with pytest.raises(IllegalTransition, match="no conversation transition"):
        rules.check(BOT, ConversationWrite(mode=HUMAN, reason="because"))


def test_simulate_waits_for_every_end_of_the_message_chart() -> None:
    """`pyloto simulate` stops at each terminal state, `with_agent` included (a message held
    for a person is finished, not timed out)."""
    from pyloto_corp.cli import TERMINAL

    chart = load_chart()
    assert set(TERMINAL) == {name for name, spec in chart.states.items() if spec.terminal}
