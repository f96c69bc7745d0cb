"""The in-process queue: retries with backoff, dead letters, concurrency, rate, dedupe, stop.

Timings are asserted only as bounds that slowness cannot break: retry delays are at least the
backoff, and dispatches never exceed the rate limit's allowance in any one-second window.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import anyio
import pytest

from pyloto_corp.adapters.local_queue import LocalQueue, _TokenBucket
from pyloto_corp.application.ports import (
    QueueUnavailable,
    Task,
    TaskHandler,
    TransientStepError,
)
from pyloto_corp.application.queues import QueueSpec
from tests.support.helpers import eventually

pytestmark = pytest.mark.anyio

# Slack for the event loop firing a timer up to one clock tick early.
EARLY_TIMER_SLACK = 0.002


def spec(
    rate: float = 1000.0,
    concurrent: int = 5,
    attempts: int = 5,
    min_backoff: float = 0.02,
    max_backoff: float = 1.0,
) -> QueueSpec:
    """A small, fast inbound queue."""
    return QueueSpec(
        "inbound",
        rate_per_second=rate,
        max_concurrent=concurrent,
        max_attempts=attempts,
        min_backoff_seconds=min_backoff,
        max_backoff_seconds=max_backoff,
    )


def task(n: int | str = 1, state: str = "received") -> Task:
    """A task of the inbound lane."""
    return Task(f"wamid.Q{n}", state, "inbound")


def unstarted(queue_spec: QueueSpec) -> LocalQueue:
    """A queue with the one lane `queue_spec`, not started yet."""
    return LocalQueue({queue_spec.name: queue_spec})


async def do_nothing(t: Task, attempt: int) -> None:
    """A handler with nothing to do, for the tests of the queue's own state."""


@asynccontextmanager
async def running(queue_spec: QueueSpec, handler: TaskHandler) -> AsyncIterator[LocalQueue]:
    """A started queue on `queue_spec`, always stopped afterwards."""
    queue = unstarted(queue_spec)
    queue.start(handler)
    try:
        yield queue
    finally:
        await queue.stop()


async def wait_until_idle(queue: LocalQueue, within: float = 20.0) -> None:
    """Poll until nothing is waiting, delayed or running."""
    await eventually(queue.idle, within)


async def test_failing_task_is_retried_until_it_succeeds() -> None:
    """A task that fails twice runs a third time with attempt numbers 1, 2, 3 and then stops."""
    attempts: list[int] = []

    async def handler(t: Task, attempt: int) -> None:
        attempts.append(attempt)
        if attempt < 3:
            raise TransientStepError("not yet")

    async with running(spec(), handler) as queue:
        await queue.enqueue(task())
        await wait_until_idle(queue)
        await anyio.sleep(0.1)  # room for a wrongful extra attempt

    assert attempts == [1, 2, 3]


async def test_retry_delays_follow_exponential_backoff() -> None:
    """Each retry waits at least min_backoff * 2^(attempt-1) after the failure before it."""
    queue_spec = spec(min_backoff=0.02, max_backoff=1.0, attempts=5)
    started: list[float] = []
    failed: list[float] = []

    async def handler(t: Task, attempt: int) -> None:
        started.append(time.monotonic())
        if attempt < 5:
            failed.append(time.monotonic())
            raise TransientStepError(f"attempt {attempt}")

    async with running(queue_spec, handler) as queue:
        await queue.enqueue(task())
        await wait_until_idle(queue)

    assert len(started) == 5
    for attempt in range(1, 5):
        waited = started[attempt] - failed[attempt - 1]
        assert waited >= queue_spec.backoff(attempt) - EARLY_TIMER_SLACK, (attempt, waited)
    assert [queue_spec.backoff(a) for a in range(1, 5)] == [0.02, 0.04, 0.08, 0.16]


async def test_backoff_is_capped_at_the_maximum() -> None:
    """Delays stop doubling at max_backoff (the spec the queue uses caps them)."""
    capped = spec(min_backoff=0.02, max_backoff=0.05)
    assert [capped.backoff(a) for a in range(1, 6)] == [0.02, 0.04, 0.05, 0.05, 0.05]


async def test_a_task_failing_every_attempt_is_dropped_and_the_queue_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Failing every time: exactly max_attempts runs, then the task is dropped with one
    ERROR line naming the attempts and the error (the handler, `deliver`, dead-letters the
    record on its last attempt); later tasks still run."""
    attempts: list[int] = []
    ran: list[str] = []

    async def handler(t: Task, attempt: int) -> None:
        ran.append(t.message_id)
        if t.message_id == task("bad").message_id:
            attempts.append(attempt)
            raise TransientStepError("Graph API indisponível")

    queue_spec = spec(attempts=4, min_backoff=0.01, max_backoff=0.02, concurrent=1)
    async with running(queue_spec, handler) as queue:
        await queue.enqueue(task("bad"))
        await wait_until_idle(queue)
        await anyio.sleep(0.2)  # ten max backoffs: a fifth attempt would have happened
        await queue.enqueue(task("good"))
        await wait_until_idle(queue)

    assert attempts == [1, 2, 3, 4]
    assert ran.count(task("good").message_id) == 1
    (dropped,) = [r for r in caplog.records if getattr(r, "event", None) == "task_dropped"]
    assert dropped.levelno == logging.ERROR
    assert dropped.__dict__["attempt"] == 4
    assert "Graph API indisponível" in dropped.__dict__["error"]


async def test_concurrency_reaches_but_never_exceeds_max_concurrent() -> None:
    """Under load, exactly max_concurrent tasks run at once: never more, and it gets there."""
    limit = 4
    running_now = 0
    peak = 0
    gate = asyncio.Event()
    done: list[str] = []

    async def handler(t: Task, attempt: int) -> None:
        nonlocal running_now, peak
        running_now += 1
        peak = max(peak, running_now)
        try:
            await gate.wait()
            await asyncio.sleep(0.002)
        finally:
            running_now -= 1
        done.append(t.message_id)

    async with running(spec(concurrent=limit), handler) as queue:
        for n in range(limit * 4):
            await queue.enqueue(task(n))
        await eventually(lambda: running_now == limit)
        await anyio.sleep(0.1)  # give a fifth worker every chance to start
        assert running_now == limit
        gate.set()
        await wait_until_idle(queue)

    assert peak == limit
    assert sorted(done) == sorted(task(n).message_id for n in range(limit * 4))


async def test_dispatch_rate_stays_within_rate_plus_burst() -> None:
    """In any sliding one-second window, dispatches never exceed rate_per_second + burst."""
    rate = 20.0
    burst = max(1.0, rate)  # the bucket holds one second's worth
    starts: list[float] = []

    async def handler(t: Task, attempt: int) -> None:
        starts.append(time.monotonic())

    total = 60
    async with running(spec(rate=rate, concurrent=10), handler) as queue:
        for n in range(total):
            await queue.enqueue(task(n))
        await wait_until_idle(queue, within=30)

    assert len(starts) == total
    starts.sort()
    busiest = max(
        sum(1 for later in starts[i:] if later - first < 1.0) for i, first in enumerate(starts)
    )
    assert busiest <= rate + burst, busiest


async def test_duplicate_enqueue_while_pending_runs_once() -> None:
    """The same (message id, state) enqueued while waiting or running runs once; later, again."""
    runs: list[Task] = []
    gate = asyncio.Event()

    async def handler(t: Task, attempt: int) -> None:
        runs.append(t)
        await gate.wait()

    async with running(spec(concurrent=1), handler) as queue:
        await queue.enqueue(task("blocker"))
        await queue.enqueue(task("dup"))  # waiting behind the blocker
        await queue.enqueue(task("dup"))
        await eventually(lambda: bool(runs))
        await queue.enqueue(task("blocker"))  # while running
        await queue.enqueue(task("dup", state="deduped"))  # another step of the same message
        gate.set()
        await wait_until_idle(queue)
        assert [t.message_id for t in runs].count(task("dup").message_id) == 2
        assert runs.count(task("blocker")) == 1
        assert runs.count(task("dup")) == 1

        await queue.enqueue(task("dup"))  # no longer pending: runs again
        await wait_until_idle(queue)

    assert runs.count(task("dup")) == 2


async def test_duplicate_enqueue_during_retry_delay_is_dropped() -> None:
    """A task waiting for its retry is still pending: enqueueing it again adds no run."""
    attempts: list[int] = []
    failed_once = asyncio.Event()

    async def handler(t: Task, attempt: int) -> None:
        attempts.append(attempt)
        if attempt == 1:
            failed_once.set()
            raise TransientStepError("retry me")

    async with running(spec(min_backoff=0.2), handler) as queue:
        await queue.enqueue(task())
        with anyio.fail_after(10):
            await failed_once.wait()
        await queue.enqueue(task())
        await queue.enqueue(task())
        await wait_until_idle(queue)
        await anyio.sleep(0.05)

    assert attempts == [1, 2]


async def test_stop_cancels_running_tasks_and_delayed_retries() -> None:
    """stop() cancels a running handler, and a retry scheduled for later never runs."""
    cancelled = asyncio.Event()
    started = asyncio.Event()
    retry_attempts: list[int] = []
    first_failure = asyncio.Event()

    async def handler(t: Task, attempt: int) -> None:
        if t.message_id == task("slow").message_id:
            started.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise
        retry_attempts.append(attempt)
        first_failure.set()
        raise TransientStepError("later")

    queue = unstarted(spec(min_backoff=0.3, max_backoff=0.3))
    queue.start(handler)
    try:
        await queue.enqueue(task("slow"))
        await queue.enqueue(task("retry"))
        with anyio.fail_after(10):
            await started.wait()
            await first_failure.wait()
    finally:
        with anyio.fail_after(10):
            await queue.stop()

    assert cancelled.is_set()
    await anyio.sleep(0.6)  # twice the backoff: a surviving timer would have fired
    assert retry_attempts == [1]


async def test_enqueue_on_stopped_or_unstarted_queue_raises() -> None:
    """enqueue() raises QueueUnavailable before start() and after stop()."""
    queue = unstarted(spec())
    with pytest.raises(QueueUnavailable):
        await queue.enqueue(task())
    queue.start(do_nothing)
    await queue.enqueue(task())
    await queue.stop()
    with pytest.raises(QueueUnavailable):
        await queue.enqueue(task())


async def test_ping_reflects_running_and_stopped() -> None:
    """ping() raises before start, passes while running, raises again after stop."""
    queue = unstarted(spec())
    with pytest.raises(QueueUnavailable):
        await queue.ping()
    queue.start(do_nothing)
    try:
        await queue.ping()
    finally:
        await queue.stop()
    with pytest.raises(QueueUnavailable):
        await queue.ping()


async def test_a_dispatch_cancelled_while_waiting_for_the_rate_gives_its_turn_back() -> None:
    """A worker stopped while it waits for a token does not use that token: the bucket's
    reservations are as they were before it asked."""
    bucket = _TokenBucket(rate=5.0)
    for _ in range(5):  # the burst: at once
        await bucket.acquire()
    waiting = asyncio.create_task(bucket.acquire())
    await asyncio.sleep(0)  # it reserved the next token and sleeps until it is due
    reserved = bucket.tokens
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert bucket.tokens == reserved + 1
    assert bucket.tokens > -1


async def test_a_retry_waits_as_long_as_the_step_said_it_must() -> None:
    """A transient error with `retry_after` (a pacing slot, another delivery's send claim)
    is retried no sooner than that, even when the backoff is shorter: the wait does not use
    up attempts on retries bound to fail."""
    queue_spec = spec(min_backoff=0.01, max_backoff=0.02, attempts=3)
    started: list[float] = []

    async def handler(t: Task, attempt: int) -> None:
        started.append(time.monotonic())
        if attempt == 1:
            raise TransientStepError("claim still alive", retry_after=0.3)

    async with running(queue_spec, handler) as queue:
        await queue.enqueue(task())
        await wait_until_idle(queue)

    assert len(started) == 2
    assert started[1] - started[0] >= 0.3 - EARLY_TIMER_SLACK


async def test_a_waiting_retry_does_not_use_up_attempts() -> None:
    """A step waiting for something that ends by itself (another delivery's send claim) is
    retried at the queue's pace without counting: more waits than attempts, then success."""
    queue_spec = spec(min_backoff=0.01, max_backoff=0.02, attempts=2)
    attempts: list[int] = []

    async def handler(t: Task, attempt: int) -> None:
        attempts.append(attempt)
        if len(attempts) <= 4:
            raise TransientStepError("claim still alive", waiting=True)

    async with running(queue_spec, handler) as queue:
        await queue.enqueue(task())
        await wait_until_idle(queue)

    assert attempts == [1, 1, 1, 1, 1]


async def test_a_wake_up_runs_at_its_time_and_a_running_step_may_queue_its_own() -> None:
    """A task with `not_before` waits for that time; a step that queues its own wake-up
    while it runs (a burst still open) runs again then, not never."""
    runs: list[float] = []

    async def handler(t: Task, attempt: int) -> None:
        runs.append(time.time())
        if len(runs) == 1:
            await queue.enqueue(replace(t, not_before=time.time() + 0.3, generation="wake-1"))

    async with running(spec(), handler) as queue:
        due = time.time() + 0.2
        await queue.enqueue(replace(task(), not_before=due))
        await eventually(lambda: len(runs) == 2, 10)
        await wait_until_idle(queue)
    assert runs[0] >= due - EARLY_TIMER_SLACK
    assert runs[1] >= runs[0] + 0.3 - EARLY_TIMER_SLACK
