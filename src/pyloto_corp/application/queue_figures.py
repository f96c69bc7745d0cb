"""What the console's Queues page shows: each queue's figures (tasks waiting, running and
retrying, the oldest waiting task), the retries Cloud Tasks' task handlers saw, and on a
store shared by instances (Redis) the instances by heartbeat with what they adopted.

Nothing here reads a record: the local queue answers from memory, Cloud Tasks from one
GetQueue per queue, Redis from its instance keys.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from pyloto_corp.application.ports import (
    InstanceBeat,
    InstanceRegistry,
    QueueFigures,
    QueueStats,
    RetryFigure,
)
from pyloto_corp.application.queues import DEAD_AFTER_SECONDS, QueueSpec

# A retry a task handler saw counts as in progress this long (above the longest backoff, so
# a task between two failed attempts stays counted), and at most this many are remembered.
RETRY_SEEN_SECONDS = 900.0
RETRIES_REMEMBERED = 500
SEEN_HERE = "retries seen by this instance's task handlers in the last 15 min"
# Retries the page lists per queue (the soonest due, or the latest seen): the count covers all.
RETRIES_LISTED = 20


class RecentRetries:
    """Tasks on attempt 2 or later whose handler ran in this process lately.

    Cloud Tasks gives a task's retry count in its request (X-CloudTasks-TaskRetryCount), not
    in the queue's statistics: the advance route notes each one here, and forgets it once an
    attempt succeeds. With several instances, each sees only the retries it served."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        keep_seconds: float = RETRY_SEEN_SECONDS,
        most: int = RETRIES_REMEMBERED,
    ) -> None:
        self.clock = clock
        self.keep_seconds = keep_seconds
        self.most = most
        self._seen: OrderedDict[tuple[str, str], tuple[str, int, float]] = OrderedDict()

    def saw(self, queue: str, message_id: str, state: str, attempt: int) -> None:
        """A delivery of (message, state) on `attempt` starts."""
        key = (message_id, state)
        self._seen.pop(key, None)
        if attempt < 2:
            return
        self._seen[key] = (queue, attempt, self.clock())
        while len(self._seen) > self.most:
            self._seen.popitem(last=False)

    def finished(self, message_id: str, state: str) -> None:
        """The delivery succeeded: the task retries no more."""
        self._seen.pop((message_id, state), None)

    def figures(self, queue: str) -> list[RetryFigure]:
        """`queue`'s retries seen lately, the latest first."""
        cutoff = self.clock() - self.keep_seconds
        while self._seen and next(iter(self._seen.values()))[2] < cutoff:
            self._seen.popitem(last=False)
        return [
            RetryFigure(message_id, state, attempt, None, None, seen_at=at)
            for (message_id, state), (name, attempt, at) in reversed(self._seen.items())
            if name == queue
        ]


@dataclass(frozen=True)
class InstanceRow:
    """One instance on the page: `status` is live, dead (silent past the heartbeat
    timeout, its records adopted at a live one's next beat), retired (stopped gracefully)
    or gone (forgotten once nothing of it was left; its adoptions still counted)."""

    instance_id: str
    status: str
    beat_age: float | None
    adopted: int
    adopted_at: float | None
    this: bool


@dataclass(frozen=True)
class QueuesView:
    """Everything the Queues page shows; `instances` None: a single instance (SQLite)
    keeps no heartbeats."""

    at: float
    queues: list[QueueFigures]
    specs: Mapping[str, QueueSpec]
    instances: list[InstanceRow] | None

    @property
    def adopted_total(self) -> int:
        """Records adopted from dead instances, by every instance listed."""
        return sum(row.adopted for row in self.instances or [])

    @property
    def live_instances(self) -> int:
        """Instances beating now."""
        return sum(row.status == "live" for row in self.instances or [])


def instance_rows(
    beats: list[InstanceBeat], now: float, dead_after: float = DEAD_AFTER_SECONDS
) -> list[InstanceRow]:
    """The instances as the page lists them: live ones first, latest beat first."""
    rows = []
    for beat in beats:
        if beat.beat_at is None:
            status, age = "gone", None
        elif beat.beat_at <= 0:
            status, age = "retired", None
        else:
            age = max(0.0, now - beat.beat_at)
            status = "live" if age < dead_after else "dead"
        rows.append(
            InstanceRow(beat.instance_id, status, age, beat.adopted, beat.adopted_at, beat.this)
        )
    order = {"live": 0, "dead": 1, "retired": 2, "gone": 3}
    return sorted(rows, key=lambda r: (order[r.status], r.beat_age or 0.0))


def oldest_waiting_seconds(figures: QueueFigures, now: float) -> float | None:
    """How long the task waiting longest for a worker has waited (None: none waits)."""
    if figures.oldest_due_at is None:
        return None
    return max(0.0, now - figures.oldest_due_at)


async def queues_view(
    stats: QueueStats | None,
    registry: InstanceRegistry | None,
    retries: RecentRetries,
    specs: Mapping[str, QueueSpec],
    now: float,
) -> QueuesView:
    """The Queues page's figures at `now`: one read of each queue, one of the instances."""
    found = await stats.queue_figures(now) if stats is not None else []
    queues = []
    for figures in found:
        if figures.backend == "cloud_tasks" and figures.retrying is None:
            seen = retries.figures(figures.queue)
            note = "; ".join(n for n in (figures.note, SEEN_HERE) if n)
            figures = replace(figures, retrying=len(seen), retries=seen[:RETRIES_LISTED], note=note)
        queues.append(figures)
    instances = None
    if registry is not None:
        instances = instance_rows(await registry.instances(), now)
    return QueuesView(at=now, queues=queues, specs=specs, instances=instances)
