"""The in-process queue's figures for the console, read from the running queue: tasks
waiting, in flight, retrying with their next attempt, and the oldest waiting task.

The handler holds tasks on events, so every figure is read at a known moment; the backoff is
long, so a retry waits for the whole test (the queue is stopped before it is due)."""

from __future__ import annotations

import asyncio
import time

import pytest

from pyloto_corp.adapters.local_queue import LocalQueue
from pyloto_corp.application.ports import QueueFigures, QueueStats, Task, TransientStepError
from pyloto_corp.application.queue_figures import RETRIES_LISTED
from pyloto_corp.application.queues import QueueSpec
from tests.support.helpers import eventually

pytestmark = pytest.mark.anyio

BACKOFF = 300.0


def one_worker(min_backoff: float = BACKOFF) -> QueueSpec:
    return QueueSpec(
        "inbound",
        rate_per_second=1000.0,
        max_concurrent=1,
        max_attempts=5,
        min_backoff_seconds=min_backoff,
        max_backoff_seconds=min_backoff,
    )


async def figures(queue: LocalQueue) -> QueueFigures:
    (found,) = await queue.queue_figures(time.time())
    return found


async def test_waiting_in_flight_and_retrying_tasks_are_counted_as_they_are() -> None:
    """One worker: A fails (its retry waits BACKOFF), B runs and holds the worker, C waits
    for it. Then B ends, C runs and ends: only A's retry is left."""
    release = asyncio.Event()
    running: list[str] = []

    async def handler(task: Task, attempt: int) -> None:
        running.append(task.message_id)
        if task.message_id == "wamid.A":
            raise TransientStepError("graph 130429")
        if task.message_id == "wamid.B":
            await release.wait()

    queue = LocalQueue({"inbound": one_worker()})
    assert isinstance(queue, QueueStats)
    queue.start(handler)
    try:
        before = time.time()
        for name in "ABC":
            await queue.enqueue(Task(f"wamid.{name}", "llm1", "inbound"))
        await eventually(lambda: running == ["wamid.A", "wamid.B"])
        found = await figures(queue)
        assert found.backend == "local"
        assert found.queue == "inbound"
        assert (found.depth, found.in_flight, found.retrying) == (2, 1, 1)
        (retry,) = found.retries
        assert (retry.message_id, retry.state, retry.attempt) == ("wamid.A", "llm1", 2)
        assert retry.backoff_seconds == BACKOFF
        assert retry.next_at is not None
        assert retry.next_at >= before + BACKOFF
        # C has waited for the worker since it was queued; A's retry is not due yet.
        assert found.oldest_due_at is not None
        assert before <= found.oldest_due_at <= time.time()
        release.set()
        await eventually(lambda: running[-1] == "wamid.C" and not queue._lanes["inbound"].attempts)
        after = await figures(queue)
        assert (after.depth, after.in_flight, after.retrying) == (1, 0, 1)
        assert after.oldest_due_at is None  # nothing is overdue: A waits for its time
    finally:
        await queue.stop()


async def test_a_retry_running_now_has_no_next_attempt_and_a_wake_up_is_no_retry() -> None:
    """A task on its second attempt that is running counts as retrying, in flight; a task
    scheduled for later (a burst's wake-up) is waiting, not overdue, not a retry."""
    hold = asyncio.Event()
    attempts: list[int] = []

    async def handler(task: Task, attempt: int) -> None:
        if task.message_id == "wamid.LATER":
            return
        attempts.append(attempt)
        if attempt == 1:
            raise TransientStepError("timeout")
        await hold.wait()

    queue = LocalQueue({"inbound": one_worker(min_backoff=0.01)})
    queue.start(handler)
    try:
        await queue.enqueue(Task("wamid.R", "llm2", "inbound"))
        await eventually(lambda: attempts == [1, 2])
        await queue.enqueue(
            Task("wamid.LATER", "buffered", "inbound", not_before=time.time() + 600)
        )
        found = await figures(queue)
        assert (found.depth, found.in_flight, found.retrying) == (1, 1, 1)
        (retry,) = found.retries
        assert (retry.message_id, retry.attempt, retry.next_at) == ("wamid.R", 2, None)
        assert found.oldest_due_at is None
        hold.set()
    finally:
        await queue.stop()


async def test_the_retries_listed_are_bounded_and_the_count_is_not() -> None:
    """Many retries: the figures list the soonest RETRIES_LISTED, and count them all."""

    async def handler(task: Task, attempt: int) -> None:
        raise TransientStepError("down")

    queue = LocalQueue({"inbound": one_worker()})
    queue.start(handler)
    total = RETRIES_LISTED + 5
    try:
        for n in range(total):
            await queue.enqueue(Task(f"wamid.M{n}", "llm1", "inbound"))
        lane = queue._lanes["inbound"]
        await eventually(lambda: sum(w.attempt == 2 for w in lane.waiting.values()) == total)
        found = await figures(queue)
        assert found.retrying == total
        assert found.depth == total
        assert len(found.retries) == RETRIES_LISTED
        due = [r.next_at for r in found.retries]
        assert due == sorted(due)  # the soonest first
    finally:
        await queue.stop()
