"""The console's pure parts: the statechart drawing, the session and sealed links, and the
figures computed from counter buckets."""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace
from xml.etree import ElementTree

import pytest

from pyloto_corp.application.console import dashboard
from pyloto_corp.application.ports import RecordPage, RecordQuery
from pyloto_corp.bootstrap import CONVERSATION_CHART_FILE, load_chart, statechart_dir
from pyloto_corp.domain.ops_metrics import (
    HOUR,
    MINUTE,
    bucket_of,
    duration_bin,
    percentiles,
    transition_counters,
)
from pyloto_corp.domain.records import HistoryEntry, InboundMessage, Record
from pyloto_corp.domain.statechart import StateSpec
from pyloto_corp.domain.statechart_layout import (
    BOX_HEIGHT,
    BOX_WIDTH,
    layout,
    render_svg,
    summarised,
)
from pyloto_corp.http.ops_auth import ConsoleKeys

SVG = "{http://www.w3.org/2000/svg}"


def test_every_state_and_transition_is_drawn_with_its_counts_as_text() -> None:
    """Each state shows its count; each arrow taken shows its number, an arrow not taken is
    dimmed (`idle`) with no number (never a grey 0), and the arrows into a funnel such as
    `failed` carry no number of their own: one `into failed: N` line beside its box."""
    chart = load_chart()
    taken = {"queued_outbound>sending": 5, "sending>failed": 2, "llm1>failed": 1}
    svg = render_svg(chart, {"sent": 7, "failed": 2}, taken)
    root = ElementTree.fromstring(svg)  # noqa: S314 - markup this test just rendered
    counts = {
        g.get("data-state"): g.find(f"{SVG}text[@class='count']").text  # type: ignore[union-attr]
        for g in root.iter(f"{SVG}g")
        if g.get("data-state")
    }
    assert set(counts) == set(chart.states)
    assert counts["sent"] == "7"
    assert counts["failed"] == "2"
    assert counts["llm1"] == "0"
    groups = {g.get("data-transition"): g for g in root.iter(f"{SVG}g") if g.get("data-transition")}
    assert set(groups) == {f"{t.source}>{t.dest}" for t in chart.transitions}
    idle = {key for key, g in groups.items() if "idle" in (g.get("class") or "").split()}
    assert idle == set(groups) - set(taken)
    edges = {
        t.get("data-transition"): t.text
        for t in root.iter(f"{SVG}text")
        if "edge-count" in (t.get("class") or "")
    }
    funnels = summarised(chart)
    assert "failed" in funnels
    assert set(edges) == {key for key in groups if key.split(">")[1] not in funnels}
    assert edges["queued_outbound>sending"] == "5"
    assert edges["received>deduped"] is None  # not taken: no number at all
    assert "0" not in edges.values()
    into = {
        t.get("data-state"): t.text
        for t in root.iter(f"{SVG}text")
        if t.get("id", "").startswith("into-")
    }
    assert into["failed"] == "into failed: 3"
    assert set(into) == funnels
    assert all(into[name] is None for name in funnels - {"failed"})


def test_each_count_label_sits_on_its_own_arrow() -> None:
    """A count is drawn on its arrow's curve (within a few units of a point of it), so it
    cannot read as another arrow's."""
    chart = load_chart()
    taken = {f"{t.source}>{t.dest}": 4 for t in chart.transitions}
    root = ElementTree.fromstring(render_svg(chart, {}, taken))  # noqa: S314
    checked = 0
    for g in root.iter(f"{SVG}g"):
        label = g.find(f"{SVG}text")
        path = g.find(f"{SVG}path")
        if label is None or path is None or not g.get("data-transition"):
            continue
        numbers = [float(n) for n in re.findall(r"-?[0-9.]+", path.get("d", ""))]
        points = list(zip(numbers[0::2], numbers[1::2], strict=True))
        x, y = float(label.get("x", "0")), float(label.get("y", "0"))
        curve = _curve_points(points)
        assert min(abs(px - x) + abs(py - y) for px, py in curve) <= 10, g.get("data-transition")
        checked += 1
    assert checked >= 10


def _curve_points(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points along a path of a line (two points) or one cubic curve (four)."""
    if len(points) == 2:
        (x0, y0), (x1, y1) = points
        return [(x0 + (x1 - x0) * i / 50, y0 + (y1 - y0) * i / 50) for i in range(51)]
    p0, p1, p2, p3 = points
    out = []
    for i in range(101):
        t = i / 100
        u = 1 - t
        out.append(
            (
                u**3 * p0[0] + 3 * u * u * t * p1[0] + 3 * u * t * t * p2[0] + t**3 * p3[0],
                u**3 * p0[1] + 3 * u * u * t * p1[1] + 3 * u * t * t * p2[1] + t**3 * p3[1],
            )
        )
    return out


def test_boxes_do_not_overlap_and_the_happy_path_is_one_row() -> None:
    placed = layout(load_chart()).states
    boxes = list(placed.values())
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            apart = abs(a.x - b.x) >= BOX_WIDTH or abs(a.y - b.y) >= BOX_HEIGHT
            assert apart, (a.name, b.name)
    row = [p.name for p in sorted(boxes, key=lambda p: p.x) if p.slot == 0]
    assert row == [
        "received",
        "deduped",
        "media",
        "buffered",
        "llm1",
        "llm2",
        "llm3",
        "queued_outbound",
        "sending",
        "sent",
    ]
    assert placed["fallback"].slot < 0 < placed["failed"].slot


def test_the_conversation_chart_with_its_cycles_and_no_end_is_drawn_whole() -> None:
    """statecharts/conversation.yaml loops back to `bot` from both other modes and has no
    terminal state: every mode gets its own box, every transition its edge, named."""
    chart = load_chart(statechart_dir() / CONVERSATION_CHART_FILE)
    lay = layout(chart)
    boxes = list(lay.states.values())
    assert {p.name for p in boxes} == {"bot", "waiting_human", "human"}
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert abs(a.x - b.x) >= BOX_WIDTH or abs(a.y - b.y) >= BOX_HEIGHT, (a.name, b.name)
        assert a.x - BOX_WIDTH / 2 > 0
        assert a.x + BOX_WIDTH / 2 < lay.width
    svg = render_svg(
        chart, {"waiting_human": 2, "human": 1}, None, lay, svg_id="conversation-chart"
    )
    root = ElementTree.fromstring(svg)  # noqa: S314 - markup this test just rendered
    assert root.get("id") == "conversation-chart"
    edges = {g.get("data-transition") for g in root.iter(f"{SVG}g") if g.get("data-transition")}
    assert edges == {
        "bot>waiting_human",
        "bot>human",
        "waiting_human>human",
        "waiting_human>bot",
        "human>bot",
    }
    labels = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "edge-label"]
    assert sorted(labels) == sorted(
        ["request_human", "take_over", "take_over", "release", "release"]
    )
    assert not [t for t in root.iter(f"{SVG}text") if t.get("class", "").startswith("edge-count")]
    counts = {t.get("id"): t.text for t in root.iter(f"{SVG}text") if t.get("class") == "count"}
    assert counts == {
        "conversation-chart-count-bot": "0",
        "conversation-chart-count-waiting_human": "2",
        "conversation-chart-count-human": "1",
    }
    for text in root.iter(f"{SVG}text"):  # every label inside the drawing
        assert 0 <= float(text.get("y", "0")) <= lay.height


def test_a_new_state_in_the_statechart_file_shows_up_without_touching_the_console() -> None:
    chart = load_chart()
    extra = dict(chart.states)
    extra["media"] = StateSpec("media", "Media fetched.", "inbound", False, 1)
    changed = replace(chart, states=extra)
    svg = render_svg(changed, {"media": 3}, {})
    assert re.search(r'id="count-media"[^>]*>3<', svg)


def test_the_same_file_gives_the_same_drawing() -> None:
    chart = load_chart()
    again = load_chart()
    assert render_svg(chart, {}, {}) == render_svg(again, {}, {})


def test_sealed_links_round_trip_and_refuse_tampering() -> None:
    keys = ConsoleKeys("token-a")
    wamid = "wamid.HBgNNTUxMTk5OTk5OTk5ORUCABIYFjNFQjA+/abc=="
    sealed = keys.seal(wamid)
    assert keys.unseal(sealed) == wamid
    assert "5511" not in sealed
    assert "/" not in sealed
    assert "+" not in sealed
    assert keys.seal(wamid) != sealed  # a fresh nonce each time
    flipped = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    assert keys.unseal(flipped) is None
    assert ConsoleKeys("token-b").unseal(sealed) is None
    assert keys.unseal("") is None
    assert keys.unseal("!!!") is None


def test_a_sealed_link_is_aes_gcm_bound_to_links() -> None:
    """A ciphertext of the same key made for another purpose (no link context) never opens,
    and a link cut short is refused, not an error."""
    keys = ConsoleKeys("token-a")
    sealed = keys.seal("wamid.X")
    assert keys.unseal(sealed[:20]) is None
    assert keys.unseal(sealed + "AAAA") is None
    assert keys.iap_csrf("ana") == keys.iap_csrf("ana")
    assert keys.iap_csrf("ana") != keys.iap_csrf("bia")
    assert keys.iap_csrf("ana") != ConsoleKeys("token-b").iap_csrf("ana")


def test_percentiles_read_back_within_a_bin() -> None:
    samples = [10.0] * 50 + [100.0] * 45 + [1000.0] * 5
    hist: dict[int, int] = {}
    for ms in samples:
        hist[duration_bin(ms)] = hist.get(duration_bin(ms), 0) + 1
    found = percentiles(hist)
    assert found.count == 100
    assert found.p50 is not None
    assert 10.0 <= found.p50 <= 12.5
    assert found.p95 is not None
    assert 100.0 <= found.p95 <= 125.0
    assert found.p99 is not None
    assert 1000.0 <= found.p99 <= 1250.0
    assert percentiles({}).p50 is None


def _record(history: list[HistoryEntry], state: str, created: float = 0.0, **kw: object) -> Record:
    inbound = InboundMessage("wamid.X", "5511999999999", "text", 0, text="oi")
    return Record("wamid.X", inbound, state, created, history[-1].at, history=history, **kw)  # type: ignore[arg-type]


def test_transition_counters_name_the_edge_the_step_time_and_the_end_to_end_time() -> None:
    sent = _record([HistoryEntry("sending", "sent", "send", 2.0, 150.0, 1)], "sent", created=0.5)
    assert transition_counters(sent) == (
        "t:sending>sent",
        f"d:sending:{duration_bin(150.0)}",
        f"e:{duration_bin(1500.0)}",
        "r:llm",
    )
    fell = _record(
        [HistoryEntry("llm1", "fallback", "fall_back", 2.0, 5.0, 2)],
        "fallback",
        fallback_reason="llm_timeout",
    )
    assert "f:llm_timeout" in transition_counters(fell)
    odd = _record(
        [HistoryEntry("llm1", "fallback", "fall_back", 2.0, 5.0, 2)],
        "fallback",
        fallback_reason="Weird, reason/with \n text",
    )
    assert all(re.fullmatch(r"[a-z0-9_:>]+", n) for n in transition_counters(odd))


class _Model:
    """Buckets as a store would return them."""

    def __init__(
        self, minutes: list[tuple[int, dict[str, int]]], hours: list[tuple[int, dict[str, int]]]
    ) -> None:
        self.minutes, self.hours = minutes, hours
        self.asked: list[tuple[int, float]] = []

    async def state_counts(self) -> dict[str, int]:
        return {"sent": 4, "failed": 1, "ghost": 9}

    async def counter_buckets(self, width: int, since: float) -> list[tuple[int, dict[str, int]]]:
        self.asked.append((width, since))
        return self.minutes if width == MINUTE else self.hours

    async def list_records(self, query: RecordQuery) -> RecordPage:
        raise AssertionError("the dashboard reads no record")


def test_dashboard_sums_the_windows_from_the_buckets() -> None:
    now = 1_800_000_000.0
    this_minute = bucket_of(now, MINUTE)
    old = this_minute - 2 * HOUR  # outside the hour: ignored
    minutes = [
        (old, {"t:>received": 100}),
        (
            this_minute - MINUTE,
            {
                "t:>received": 3,
                "t:sending>sent": 2,
                "e:20": 2,
                "f:llm_timeout": 1,
                "t:llm1>fallback": 1,
            },
        ),
        (
            this_minute,
            {
                "t:>received": 1,
                "t:sending>sent": 1,
                "e:30": 1,
                "t:sending>failed": 1,
                "d:llm1:10": 4,
            },
        ),
    ]
    hours = [(bucket_of(now, HOUR), {"t:>received": 4, "t:sending>sent": 3})]
    model = _Model(minutes, hours)
    board = asyncio.run(dashboard(model, load_chart(), now))
    assert board.counts["sent"] == 4
    assert board.counts["llm1"] == 0
    assert "ghost" not in board.counts
    assert board.hour.total_received == 4
    assert board.hour.total_sent == 3
    assert board.hour.received[-2:] == [3, 1]
    assert len(board.hour.received) == 60
    assert board.hour.taken["sending>sent"] == 3
    assert board.hour.dead_letters == 1
    assert board.hour.fallbacks == {"llm_timeout": 1}
    assert board.hour.end_to_end.count == 3
    assert board.hour.steps["llm1"].count == 4
    assert board.day.total_received == 4
    assert len(board.day.starts) == 24
    assert [w for w, _ in model.asked] == [MINUTE, HOUR]


@pytest.mark.parametrize("ms", [0.0, 0.5, 1.0, 1.01, 7.0, 1000.0, 3_600_000.0])
def test_a_duration_lies_in_its_bin(ms: float) -> None:
    b = duration_bin(ms)
    assert ms <= 1.25**b + 1e-9
    assert b == 0 or ms > 1.25 ** (b - 1)
