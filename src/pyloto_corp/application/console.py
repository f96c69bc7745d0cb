"""What the operations console shows, read from the stores' counters (never every record).

The store keeps counters per minute and per hour (domain.ops_metrics), written with each
transition; this module turns the buckets of the last hour and the last day into the
console's figures: records per state, transitions taken, messages received and sent over
time, fallbacks by reason, dead letters, and percentiles from `received` to `sent` and per
step; the LLM calls of each step by model and outcome (the rollout's gates) and who made the
replies sent; and, per UTC day, what the line costs (billable messages and LLM tokens,
priced).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyloto_corp.application.ports import OpsReadModel
from pyloto_corp.domain.costs import DayCost, Prices, day_cost
from pyloto_corp.domain.ops_metrics import (
    DAY,
    HOUR,
    LLM_LATENCY_PREFIX,
    LLM_STEPS,
    MINUTE,
    LLMCalls,
    Percentiles,
    bucket_of,
    histogram,
    llm_calls,
    merge,
    percentiles,
    replies_by_author,
)
from pyloto_corp.domain.statechart import Statechart

RECEIVED = "t:>received"
# The canary's gate (docs/runbook.md, rolling the LLM out): move on while LLM timeouts stay
# under 5 % of a step's calls; the console marks a step's timeouts at or over it.
TIMEOUT_GATE = 0.05


@dataclass(frozen=True)
class Window:
    """The figures of one window (the last hour by minute, or the last day by hour)."""

    name: str
    width: int
    starts: list[int]  # bucket starts, oldest first, one per point of the series
    received: list[int]
    sent: list[int]
    taken: dict[str, int]  # "source>dest": transitions taken in the window
    fallbacks: dict[str, int]  # reason: fallbacks in the window
    dead_letters: int
    end_to_end: Percentiles
    steps: dict[str, Percentiles]  # state whose step ran: its duration's percentiles
    # The LLM calls of each step by model and outcome; how long each step's calls took.
    llm: list[LLMCalls] = field(default_factory=list)
    llm_latency: dict[str, Percentiles] = field(default_factory=dict)
    replies: dict[str, int] = field(default_factory=dict)  # author: replies sent

    @property
    def total_received(self) -> int:
        """Messages received in the window."""
        return sum(self.received)

    @property
    def total_sent(self) -> int:
        """Replies sent in the window."""
        return sum(self.sent)

    def llm_share(self) -> float | None:
        """The share of the bot's replies sent that LLM#3 made (None with no bot reply):
        agents' replies and handoff acknowledgments are left out, as the rollout does not
        choose them."""
        bot = self.replies.get("llm", 0) + self.replies.get("template", 0)
        return self.replies.get("llm", 0) / bot if bot else None


@dataclass(frozen=True)
class Dashboard:
    """Everything the main page shows."""

    at: float
    counts: dict[str, int]  # every state of the chart, 0 when empty
    hour: Window
    day: Window
    states: list[str] = field(default_factory=list)

    @property
    def open_records(self) -> int:
        """Records not yet in a terminal state."""
        return sum(self.counts.get(state, 0) for state in self.states)


def _window(
    name: str,
    width: int,
    points: int,
    buckets: list[tuple[int, dict[str, int]]],
    now: float,
    chart: Statechart,
) -> Window:
    first = bucket_of(now, width) - (points - 1) * width
    starts = [first + i * width for i in range(points)]
    by_start = {start: counters for start, counters in buckets if start >= first}
    received = [by_start.get(s, {}).get(RECEIVED, 0) for s in starts]
    sent = [
        sum(n for key, n in by_start.get(s, {}).items() if key.endswith(">sent")) for s in starts
    ]
    total = merge(by_start.values())
    taken = {key[2:]: n for key, n in total.items() if key.startswith("t:") and key[2] != ">"}
    fallbacks = {key[2:]: n for key, n in total.items() if key.startswith("f:")}
    dead = sum(n for key, n in taken.items() if key.endswith(">failed"))
    steps = {
        state: found
        for state in chart.states
        if (found := percentiles(histogram(total, f"d:{state}:"))).count
    }
    return Window(
        name=name,
        width=width,
        starts=starts,
        received=received,
        sent=sent,
        taken=taken,
        fallbacks=dict(sorted(fallbacks.items(), key=lambda item: -item[1])),
        dead_letters=dead,
        end_to_end=percentiles(histogram(total, "e:")),
        steps=steps,
        llm=llm_calls(total),
        llm_latency={
            step: found
            for step in LLM_STEPS
            if (found := percentiles(histogram(total, f"{LLM_LATENCY_PREFIX}{step}:"))).count
        },
        replies=replies_by_author(total),
    )


async def dashboard(model: OpsReadModel, chart: Statechart, now: float) -> Dashboard:
    """The main page's figures at `now`: three reads of the store, whatever it holds."""
    found = await model.state_counts()
    minutes = await model.counter_buckets(MINUTE, now - HOUR + MINUTE)
    hours = await model.counter_buckets(HOUR, now - 23 * HOUR)
    counts = {state: int(found.get(state, 0)) for state in chart.states}
    return Dashboard(
        at=now,
        counts=counts,
        hour=_window("last hour", MINUTE, 60, minutes, now, chart),
        day=_window("last day", HOUR, 24, hours, now, chart),
        states=chart.open_states,
    )


# The Cost page shows the last month, a day a row (the day buckets are kept a little longer).
COST_DAYS = 31


async def daily_costs(
    model: OpsReadModel, prices: Prices, now: float, days: int = COST_DAYS
) -> list[DayCost]:
    """The last `days` UTC days' billable messages, tokens and costs, newest first: one
    read of the store's day counters, whatever it holds (days with nothing are left out)."""
    first = bucket_of(now, DAY) - (days - 1) * DAY
    found = await model.counter_buckets(DAY, first)
    return [day_cost(start, counters, prices) for start, counters in reversed(found) if counters]
