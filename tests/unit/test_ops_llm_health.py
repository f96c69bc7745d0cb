"""The console's LLM health: what a transition adds for the LLM calls it saved (by step,
model and outcome) and for the reply it sent (by who made it), and the figures, rates and
card read back from those counters."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import replace

import pytest

from pyloto_corp.application.advance import Advancer
from pyloto_corp.application.console import dashboard
from pyloto_corp.application.ports import LLMFailure, RecordPage, RecordQuery
from pyloto_corp.application.step_context import LLMRouting, StepContext
from pyloto_corp.bootstrap import load_chart
from pyloto_corp.domain.conversation import AGENT_REPLY_KIND, HANDOFF_REASON
from pyloto_corp.domain.machine import LifecycleMachine
from pyloto_corp.domain.ops_metrics import (
    HOUR,
    LLM_OUTCOMES,
    MINUTE,
    MODEL_PART_CHARS,
    bucket_of,
    duration_bin,
    llm_calls,
    replies_by_author,
    transition_counters,
)
from pyloto_corp.domain.records import HistoryEntry, InboundMessage, Record
from pyloto_corp.domain.results import LLMCall, Results
from pyloto_corp.http.ops_pages import charts, summary_json
from tests.unit.fakes import FakeQueue, FakeStore
from tests.unit.test_llm_steps import ScriptedAssistant

OK_CALL = LLMCall(800.0, 100, 20, "gpt-4o-mini-2024-07-18", "gpt-4o-mini")


def _record(
    source: str,
    dest: str,
    trigger: str = "step",
    kind: str = "text",
    **changes: object,
) -> Record:
    """A record just moved from `source` to `dest` by `trigger`."""
    inbound = InboundMessage("wamid.X", "5511999999999", kind, 0, text="oi")
    entry = HistoryEntry(source, dest, trigger, 2.0, 5.0, 1)
    base = Record("wamid.X", inbound, dest, 0.5, 2.0, history=[entry])
    return replace(base, **changes)  # type: ignore[arg-type]


def _llm_names(record: Record) -> list[str]:
    return [name for name in transition_counters(record) if name[:2] in ("l:", "c:")]


@pytest.mark.parametrize(
    ("dest", "field"),
    [("media", "media"), ("llm1", "llm1"), ("llm2", "llm2"), ("llm3", "llm3")],
)
def test_a_steps_answered_call_counts_ok_under_the_model_it_asked_for(
    dest: str, field: str
) -> None:
    """The move to an LLM step's state counts its call `ok` under the model asked for (not
    the dated snapshot that answered), with its time's bin."""
    record = _record("deduped", dest, results=Results(**{field: OK_CALL}))
    assert _llm_names(record) == [
        f"l:{dest}:gpt_4o_mini:ok",
        f"c:{dest}:{duration_bin(800.0)}",
    ]


@pytest.mark.parametrize(
    ("failure", "outcome"),
    [
        ("timeout", "timeout"),
        ("refusal", "refused"),
        ("invalid_output", "invalid"),
        ("unparsable", "invalid"),
        ("empty_transcript", "invalid"),
        ("api_error", "error"),
        ("rate_limited", "error"),
        ("something_new", "error"),
    ],
)
def test_a_failed_call_counts_its_outcome_on_the_fallback(failure: str, outcome: str) -> None:
    """`fall_back` with the failed call counts it under the step that made it and the
    outcome its failure reason maps to."""
    call = LLMCall(10_000.0, 0, 0, "gpt-4o-mini", "gpt-4o-mini", failure)
    results = Results(fallback_step="llm2", failed_call=call)
    record = _record("llm1", "fallback", "fall_back", results=results, fallback_reason=failure)
    assert _llm_names(record) == [
        f"l:llm2:gpt_4o_mini:{outcome}",
        f"c:llm2:{duration_bin(10_000.0)}",
    ]


def test_a_media_failure_counts_the_calls_own_outcome() -> None:
    """The media step's fallback reason says which media failed (`transcription_failed`);
    the counter says what became of the call (a timeout)."""
    call = LLMCall(2000.0, model="gpt-4o-mini-transcribe", failure="timeout")
    results = Results(fallback_step="media", failed_call=call)
    record = _record(
        "deduped", "fallback", "fall_back", results=results, fallback_reason="transcription_failed"
    )
    assert _llm_names(record)[0] == "l:media:gpt_4o_mini_transcribe:timeout"


def test_no_call_no_llm_counter() -> None:
    """A fallback with no call (the LLM off, sampled out), a replay's move to `fallback`
    (whose results still hold the old failed call) and any other step count no LLM call."""
    off = _record("deduped", "fallback", "fall_back", fallback_reason="llm_disabled")
    assert _llm_names(off) == []
    call = LLMCall(5.0, model="m", failure="timeout")
    replayed = _record(
        "failed",
        "fallback",
        "replay_reply",
        results=Results(fallback_step="llm1", failed_call=call),
        fallback_reason="timeout",
    )
    assert _llm_names(replayed) == []
    queued = _record("llm3", "queued_outbound", results=Results(llm3=OK_CALL))
    assert _llm_names(queued) == []


@pytest.mark.parametrize(
    "model",
    [
        "Meta-Llama/Llama-4-Scout-17B-16E-Instruct:free with spaces and a very long tail",
        "modelo çom açentos\n<script>",
        "",
    ],
)
def test_a_model_name_is_folded_and_bounded(model: str) -> None:
    """Whatever a model is called, its counter part is [a-z0-9_], at most MODEL_PART_CHARS
    long, and the name keeps its four parts."""
    record = _record("deduped", "llm1", results=Results(llm1=LLMCall(model=model)))
    (name, _) = _llm_names(record)
    step, part, outcome = name[2:].split(":")
    assert (step, outcome) == ("llm1", "ok")
    assert re.fullmatch(r"[a-z0-9_]+", part)
    assert len(part) <= MODEL_PART_CHARS


@pytest.mark.parametrize(
    ("kind", "changes", "author"),
    [
        ("text", {}, "llm"),
        ("text", {"fallback_reason": "timeout"}, "template"),
        ("text", {"results": Results(template="reengagement")}, "template"),
        ("text", {"fallback_reason": HANDOFF_REASON}, "handoff"),
        (AGENT_REPLY_KIND, {}, "agent"),
    ],
)
def test_a_sent_reply_counts_who_made_it(
    kind: str, changes: dict[str, object], author: str
) -> None:
    """The `sent` transition adds one `r:` counter: LLM#3's message, a template (the
    fallback's, or the re-engagement one outside the window), a handoff's acknowledgment,
    an agent's reply."""
    record = _record("sending", "sent", "send", kind=kind, **changes)
    assert [n for n in transition_counters(record) if n.startswith("r:")] == [f"r:{author}"]
    before = _record("queued_outbound", "sending", kind=kind, **changes)
    assert not [n for n in transition_counters(before) if n.startswith("r:")]


def test_calls_read_back_by_step_and_model_with_rates() -> None:
    """The `l:` counters become one row per step and model, the pipeline's order, every
    outcome present; rates are shares of the row's calls; a malformed name is skipped."""
    counters = {
        "l:llm2:gpt_4o_mini:ok": 18,
        "l:llm2:gpt_4o_mini:timeout": 2,
        "l:llm1:gpt_4o_mini:ok": 19,
        "l:llm1:gpt_4o_mini:invalid": 1,
        "l:media:whisper:refused": 1,
        "l:llm1:other:ok": 3,
        "l:llm1:broken": 5,
        "l:llm1:m:not_an_outcome": 5,
        "t:llm1>llm2": 19,
    }
    rows = llm_calls(counters)
    assert [(r.step, r.model) for r in rows] == [
        ("media", "whisper"),
        ("llm1", "gpt_4o_mini"),
        ("llm1", "other"),
        ("llm2", "gpt_4o_mini"),
    ]
    llm2 = rows[3]
    assert llm2.outcomes == {"ok": 18, "timeout": 2, "refused": 0, "invalid": 0, "error": 0}
    assert llm2.total == 20
    assert llm2.rate("timeout") == pytest.approx(0.10)
    assert rows[1].rate("invalid") == pytest.approx(0.05)
    assert set(rows[0].outcomes) == set(LLM_OUTCOMES)
    assert replies_by_author({"r:llm": 3, "r:agent": 1}) == {
        "llm": 3,
        "template": 0,
        "handoff": 0,
        "agent": 1,
    }


class _Model:
    """Buckets as a store would return them."""

    def __init__(self, minutes: dict[str, int], hours: dict[str, int], now: float) -> None:
        self.minutes = [(bucket_of(now, MINUTE), minutes)]
        self.hours = [(bucket_of(now, HOUR), hours)]

    async def state_counts(self) -> dict[str, int]:
        return {}

    async def counter_buckets(self, width: int, since: float) -> list[tuple[int, dict[str, int]]]:
        return self.minutes if width == MINUTE else self.hours

    async def list_records(self, query: RecordQuery) -> RecordPage:
        raise AssertionError("the dashboard reads no record")


def test_the_dashboard_card_and_summary_show_the_gates() -> None:
    """Each window carries the calls, their p95 per step and the replies by author; the card
    marks a step whose timeouts reach the canary's 5 % gate, and the summary API carries
    the counts and rates of both windows."""
    now = 1_800_000_000.0
    minutes = {
        "l:llm1:gpt_4o_mini:ok": 96,
        "l:llm1:gpt_4o_mini:timeout": 4,
        "l:llm2:gpt_4o_mini:ok": 90,
        "l:llm2:gpt_4o_mini:timeout": 10,
        f"c:llm1:{duration_bin(900.0)}": 100,
        "r:llm": 6,
        "r:template": 2,
        "r:handoff": 1,
        "r:agent": 1,
    }
    board = asyncio.run(dashboard(_Model(minutes, {"r:llm": 1}, now), load_chart(), now))
    assert [(c.step, c.total) for c in board.hour.llm] == [("llm1", 100), ("llm2", 100)]
    assert board.hour.llm_latency["llm1"].count == 100
    assert board.hour.replies == {"llm": 6, "template": 2, "handoff": 1, "agent": 1}
    assert board.hour.llm_share() == pytest.approx(0.75)
    assert board.day.llm == []
    assert board.day.llm_share() == 1.0

    html = charts(board)
    card = re.search(r'<div class="card chart llm-health" data-window="last hour">.*?</div>', html)
    assert card
    llm1 = re.search(r'data-step="llm1" data-model="gpt_4o_mini">(.*?)</tr>', card.group(0))
    llm2 = re.search(r'data-step="llm2" data-model="gpt_4o_mini">(.*?)</tr>', card.group(0))
    assert llm1
    assert llm2
    assert '<td class="num outcome-timeout">4 <span class="muted">4.0 %</span>' in llm1.group(1)
    assert '<td class="num outcome-timeout over">10 ' in llm2.group(1)
    assert '<b class="llm-share">75.0 %</b>' in card.group(0)
    assert '<b class="replies-total">10</b>' in card.group(0)
    assert "no-llm-calls" in html  # the day saw none

    summary = json.loads(summary_json(board))
    (first, second) = summary["llm"]["hour"]["calls"]
    assert first["step"] == "llm1"
    assert first["outcomes"]["timeout"] == 4
    assert first["rates"]["timeout"] == pytest.approx(0.04)
    assert second["rates"]["ok"] == pytest.approx(0.9)
    assert summary["llm"]["hour"]["latency_ms"]["llm1"]["count"] == 100
    assert summary["llm"]["day"] == {"calls": [], "latency_ms": {}}
    assert summary["replies"]["hour"]["llm_share"] == pytest.approx(0.75)
    assert summary["replies"]["day"]["total"] == 1


@pytest.mark.anyio
async def test_a_timed_out_llm1_is_counted_by_the_save_that_falls_back(
    machine: LifecycleMachine,
    store: FakeStore,
    queue: FakeQueue,
    context: StepContext,
) -> None:
    """Through the Advancer: LLM#1 times out, the record falls back, and the store's
    counters hold the call's outcome under the model the assistant asked for; the
    template reply sent then counts as a template's."""
    assistant = ScriptedAssistant()
    failure = LLMFailure("timeout", "no answer within 10 s")
    failure.model = "gpt-4o-mini"  # as the OpenAI adapter names it
    assistant.failures["detect_event"] = failure
    llm = replace(context, llm=LLMRouting(assistant=assistant), hash_key="k")
    advancer = Advancer(machine, store, queue, llm)
    inbound = InboundMessage("wamid.T1", "5511999999999", "text", 0, text="Quanto custa?")
    store.put(replace(Record.received(inbound, context.clock()), state="deduped"))

    state = "deduped"
    while state not in ("sent", "failed"):
        state = await advancer.advance("wamid.T1", state)
    assert state == "sent"
    (counts,) = [c for (width, _), c in store.counters.items() if width == MINUTE]
    assert counts["l:llm1:gpt_4o_mini:timeout"] == 1
    assert not [name for name in counts if name.startswith("l:") and name.endswith(":ok")]
    assert counts["r:template"] == 1
    saved = await store.get("wamid.T1")
    assert saved is not None
    assert saved.results.failed_call is not None
    assert saved.results.failed_call.failure == "timeout"
