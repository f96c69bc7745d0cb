"""Re-queue records stuck in a non-terminal state; purge records past retention."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from pyloto_corp.application.ports import RecordStore, Task, TaskQueue
from pyloto_corp.domain.statechart import Statechart

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepResult:
    """What one sweep did."""

    requeued: int
    purged: int


async def sweep(
    store: RecordStore,
    queue: TaskQueue,
    chart: Statechart,
    clock: Callable[[], float],
    stuck_after_seconds: float,
    retention_seconds: float,
) -> SweepResult:
    """Queue the step of every open record untouched for `stuck_after_seconds`."""
    now = clock()
    open_records = await store.open_records(older_than=now - stuck_after_seconds)
    for message_id, state in open_records:
        # A generation of its own, so a queue that refuses a repeated step (Cloud Tasks task
        # names) takes this deliberate re-queue.
        task = Task(message_id, state, chart.states[state].queue, generation=f"sweep-{now:.0f}")
        await queue.enqueue(task)
    purged = await store.purge(created_before=now - retention_seconds)
    result = SweepResult(requeued=len(open_records), purged=purged)
    log.info(
        "sweep_done",
        extra={"event": "sweep_done", "requeued_count": result.requeued, "purged_count": purged},
    )
    return result
