"""The Queues page's figures: retries seen by Cloud Tasks' handlers, instances by heartbeat,
Cloud Tasks' queue statistics, and a figure a queue cannot give shown as such, never 0."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from google.cloud import tasks_v2beta3

from pyloto_corp.adapters.cloud_tasks import NO_STATS, figures_of
from pyloto_corp.application.ports import InstanceBeat, QueueFigures, RetryFigure
from pyloto_corp.application.queue_figures import (
    SEEN_HERE,
    QueuesView,
    RecentRetries,
    instance_rows,
    oldest_waiting_seconds,
    queues_view,
)
from pyloto_corp.application.queues import DEAD_AFTER_SECONDS, INBOUND, OUTBOUND
from pyloto_corp.domain.privacy import message_ref
from pyloto_corp.http.ops_queues import NOT_ON_CLOUD_TASKS, queues_json, queues_page
from tests.support.helpers import SENDER
from tests.unit.fakes import FakeClock

pytestmark = pytest.mark.anyio

NOW = 1_800_000_000.0
SPECS = {"inbound": INBOUND, "outbound": OUTBOUND}
WAMID = f"wamid.HBgN{SENDER}FQIAERgSQUFBQ"  # a wamid carries the sender's number


class Figures:
    """QueueStats (our own port) answering fixed figures."""

    def __init__(self, *found: QueueFigures) -> None:
        self.found = list(found)

    async def queue_figures(self, now: float) -> list[QueueFigures]:
        return self.found


class Beats:
    """The read side of an InstanceRegistry (our own port) with fixed beats."""

    def __init__(self, *beats: InstanceBeat) -> None:
        self.beats = list(beats)

    async def instances(self) -> list[InstanceBeat]:
        return self.beats


def cloud(queue: str = "inbound") -> QueueFigures:
    """A Cloud Tasks queue that gave no statistics."""
    return figures_of(queue, None, NOW)


def test_a_retry_counts_from_the_second_attempt_until_an_attempt_succeeds() -> None:
    clock = FakeClock(NOW)
    seen = RecentRetries(clock)
    seen.saw("outbound", "wamid.A", "sending", 1)
    assert seen.figures("outbound") == []
    seen.saw("outbound", "wamid.A", "sending", 3)
    seen.saw("inbound", "wamid.B", "llm1", 2)
    (retry,) = seen.figures("outbound")
    assert (retry.message_id, retry.state, retry.attempt) == ("wamid.A", "sending", 3)
    assert retry.seen_at == NOW
    assert retry.next_at is None  # Cloud Tasks does not say
    seen.finished("wamid.A", "sending")
    assert seen.figures("outbound") == []
    assert [r.message_id for r in seen.figures("inbound")] == ["wamid.B"]


def test_retries_seen_long_ago_are_forgotten_and_the_memory_is_bounded() -> None:
    clock = FakeClock(NOW)
    seen = RecentRetries(clock, keep_seconds=600, most=3)
    seen.saw("inbound", "wamid.OLD", "llm1", 2)
    clock.advance(601)
    seen.saw("inbound", "wamid.NEW", "llm1", 2)
    assert [r.message_id for r in seen.figures("inbound")] == ["wamid.NEW"]
    for n in range(5):
        seen.saw("inbound", f"wamid.N{n}", "llm2", 4)
    assert [r.message_id for r in seen.figures("inbound")] == ["wamid.N4", "wamid.N3", "wamid.N2"]


def test_instances_are_live_dead_retired_or_gone_by_their_last_beat() -> None:
    rows = instance_rows(
        [
            InstanceBeat("retired", 0.0),
            InstanceBeat("dead", NOW - DEAD_AFTER_SECONDS - 1, adopted=0),
            InstanceBeat("gone", None, adopted=4, adopted_at=NOW - 50),
            InstanceBeat("old-live", NOW - 4, adopted=2, adopted_at=NOW - 30),
            InstanceBeat("me", NOW - 1, this=True),
        ],
        NOW,
    )
    assert [(r.instance_id, r.status) for r in rows] == [
        ("me", "live"),
        ("old-live", "live"),
        ("dead", "dead"),
        ("retired", "retired"),
        ("gone", "gone"),
    ]
    assert rows[0].beat_age == 1
    assert rows[0].this
    view = QueuesView(NOW, [], SPECS, rows)
    assert view.live_instances == 2
    assert view.adopted_total == 6


async def test_a_single_instance_store_lists_no_instances() -> None:
    view = await queues_view(Figures(), None, RecentRetries(), SPECS, NOW)
    assert view.instances is None
    page = queues_page(view, "csrf")
    assert 'id="single-instance"' in page
    assert json.loads(queues_json(view))["instances"] is None


async def test_cloud_tasks_retries_come_from_what_the_handlers_saw() -> None:
    seen = RecentRetries(FakeClock(NOW))
    seen.saw("outbound", WAMID, "sending", 2)
    view = await queues_view(Figures(cloud("inbound"), cloud("outbound")), None, seen, SPECS, NOW)
    inbound, outbound = view.queues
    assert (inbound.retrying, outbound.retrying) == (0, 1)
    assert SEEN_HERE in outbound.note
    assert outbound.depth is None  # still unknown: not turned into 0


async def test_a_figure_cloud_tasks_cannot_give_reads_not_available_never_zero() -> None:
    view = await queues_view(Figures(cloud()), None, RecentRetries(), SPECS, NOW)
    page = queues_page(view, "csrf")
    for key in ("depth", "in-flight", "oldest", "executed"):
        cell = page.split(f'id="{key}-inbound">', 1)[1].split("<", 1)[0]
        assert cell == NOT_ON_CLOUD_TASKS, key
    assert page.split('id="retrying-inbound">', 1)[1].startswith("0<")  # counted, none seen
    data = json.loads(queues_json(view))["queues"][0]
    assert data["depth"] is None
    assert data["in_flight"] is None
    assert data["oldest_waiting_seconds"] is None
    assert NO_STATS in data["note"]


def test_cloud_tasks_statistics_become_the_queue_figures() -> None:
    """tasks_count counts the dispatched tasks too; an arrival time in the past is the
    oldest task waiting, one in the future means none is overdue."""
    past = datetime.fromtimestamp(NOW - 42, UTC)
    stats = tasks_v2beta3.QueueStats(
        tasks_count=12,
        concurrent_dispatches_count=5,
        executed_last_minute_count=30,
        oldest_estimated_arrival_time=past,
    )
    found = figures_of("inbound", stats, NOW)
    assert (found.depth, found.in_flight, found.executed_last_minute) == (7, 5, 30)
    assert oldest_waiting_seconds(found, NOW) == pytest.approx(42)
    assert found.retrying is None
    assert found.note == ""
    future = tasks_v2beta3.QueueStats(
        tasks_count=1, oldest_estimated_arrival_time=datetime.fromtimestamp(NOW + 60, UTC)
    )
    assert figures_of("inbound", future, NOW).oldest_due_at is None
    empty = figures_of("inbound", tasks_v2beta3.QueueStats(), NOW)
    assert (empty.depth, empty.in_flight, empty.oldest_due_at) == (0, 0, None)


def test_the_page_names_a_retry_by_its_log_reference_and_its_next_attempt() -> None:
    local = QueueFigures(
        queue="outbound",
        backend="local",
        depth=3,
        in_flight=1,
        retrying=2,
        oldest_due_at=NOW - 75,
        retries=[
            RetryFigure(WAMID, "sending", 2, NOW + 20, 10.0),
            RetryFigure("wamid.RUNNING", "llm1", 3, None, None),
        ],
    )
    view = QueuesView(NOW, [local], SPECS, [])
    page = queues_page(view, "csrf")
    assert message_ref(WAMID) in page
    assert WAMID not in page
    assert SENDER not in page
    assert "(in 20 s)" in page
    assert "running now" in page
    assert 'id="oldest-outbound">1 min 15 s<' in page
    assert "10/s, 10 concurrent, 8 attempts" in page
    data = json.loads(queues_json(view))
    assert data["queues"][0]["retries"][0]["ref"] == message_ref(WAMID)
    assert WAMID not in json.dumps(data)
    assert SENDER not in json.dumps(data)
    assert data["queues"][0]["oldest_waiting_seconds"] == 75
