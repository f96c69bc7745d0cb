"""In-process queues with the deploy guide's rates, concurrency, attempts and backoff.

Tasks live in memory: a crash loses them, and the sweeper at start-up re-queues every open
record from the store, so nothing acknowledged is lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from pyloto_corp.application.ports import (
    QueueFigures,
    QueueUnavailable,
    RetryFigure,
    Task,
    TaskHandler,
)
from pyloto_corp.application.queue_figures import RETRIES_LISTED
from pyloto_corp.application.queues import QueueSpec

log = logging.getLogger(__name__)

_Item = tuple[Task, int]


@dataclass
class _Waiting:
    """A task not running: its attempt, when it is due (epoch) and the wait before it."""

    task: Task
    attempt: int
    due_at: float
    backoff: float = 0.0


class _TokenBucket:
    """At most `rate` dispatches a second, with a burst of one second's worth.

    Each caller reserves the next token (the count may go below zero) and sleeps once, until
    its token is due: no lock to queue on, no retry loop, one timer a dispatch."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    async def acquire(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate) - 1
        self.stamp = now
        if self.tokens >= 0:
            return
        try:
            await asyncio.sleep(-self.tokens / self.rate)
        except asyncio.CancelledError:
            self.tokens += 1  # the reservation is given back
            raise


class _Lane:
    """One queue: a ready list, delayed retries, a rate limit and a pool of workers."""

    def __init__(self, spec: QueueSpec, handler: TaskHandler) -> None:
        self.spec = spec
        self.handler = handler
        self.ready: asyncio.Queue[_Item] = asyncio.Queue()
        self.bucket = _TokenBucket(spec.rate_per_second)
        self.pending: set[tuple[str, str]] = set()
        # Steps running now, and the wake-up a running step queued for itself (it runs once
        # that delivery ends: the key is taken until then).
        self.active: set[tuple[str, str]] = set()
        self.wakeups: dict[tuple[str, str], Task] = {}
        self.timers: set[asyncio.TimerHandle] = set()
        # What the console reads: the tasks not running, and the attempt of each running one.
        self.waiting: dict[tuple[str, str], _Waiting] = {}
        self.attempts: dict[tuple[str, str], tuple[Task, int]] = {}
        self.workers: list[asyncio.Task[None]] = []
        self.running = 0
        self.stopping = False

    def start(self) -> None:
        self.workers = [
            asyncio.create_task(self._work(), name=f"pyloto-{self.spec.name}-{n}")
            for n in range(self.spec.max_concurrent)
        ]

    async def stop(self) -> None:
        # Also a flag: a cancellation swallowed inside a task (asyncio.wait_for on Python
        # 3.11, used by redis-py, can lose one) must not leave its worker running forever.
        self.stopping = True
        for timer in self.timers:
            timer.cancel()
        for worker in self.workers:
            worker.cancel()
        await asyncio.gather(*self.workers, return_exceptions=True)
        self.workers = []

    def put(self, task: Task) -> None:
        key = (task.message_id, task.state)
        if key in self.pending:
            if task.not_before > 0 and key in self.active:
                self.wakeups[key] = task  # the running step asks to run again later
            return  # the same step is already waiting or running: duplicates are no-ops anyway
        self.pending.add(key)
        now = time.time()
        delay = task.not_before - now if task.not_before > 0 else 0.0
        self.waiting[key] = _Waiting(task, 1, now + max(0.0, delay))
        if delay > 0:
            self._later((task, 1), delay)
        else:
            self.ready.put_nowait((task, 1))

    def _later(self, item: _Item, delay: float) -> None:
        loop = asyncio.get_running_loop()
        task, attempt = item
        key = (task.message_id, task.state)
        self.waiting[key] = _Waiting(task, attempt, time.time() + delay, delay)

        def fire() -> None:
            self.timers.discard(timer)
            self.ready.put_nowait(item)

        timer = loop.call_later(delay, fire)
        self.timers.add(timer)

    def figures(self, now: float) -> QueueFigures:
        """This lane now: a copy of what it holds, no task's payload."""
        waiting = list(self.waiting.values())
        overdue = [w.due_at for w in waiting if w.due_at <= now]
        retries = [
            RetryFigure(w.task.message_id, w.task.state, w.attempt, w.due_at, w.backoff)
            for w in waiting
            if w.attempt >= 2
        ]
        retries += [
            RetryFigure(task.message_id, task.state, attempt, None, None)
            for task, attempt in self.attempts.values()
            if attempt >= 2
        ]
        retries.sort(key=lambda r: (r.next_at is not None, r.next_at or 0.0))
        return QueueFigures(
            queue=self.spec.name,
            backend="local",
            depth=len(waiting),
            in_flight=len(self.attempts),
            retrying=len(retries),
            oldest_due_at=min(overdue) if overdue else None,
            retries=retries[:RETRIES_LISTED],
        )

    async def _work(self) -> None:
        while not self.stopping:
            task, attempt = await self.ready.get()
            await self.bucket.acquire()
            self.running += 1
            try:
                await self._run(task, attempt)
            finally:
                self.running -= 1

    async def _run(self, task: Task, attempt: int) -> None:
        key = (task.message_id, task.state)
        self.active.add(key)
        self.waiting.pop(key, None)
        self.attempts[key] = (task, attempt)
        try:
            await self._attempt(task, attempt)
        finally:
            self.active.discard(key)
            self.attempts.pop(key, None)
            wakeup = self.wakeups.pop(key, None)
            if wakeup is not None and key not in self.pending:
                self.put(wakeup)

    async def _attempt(self, task: Task, attempt: int) -> None:
        key = (task.message_id, task.state)
        try:
            await self.handler(task, attempt)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            reason = f"{type(error).__name__}: {error}"[:300]
            if getattr(error, "waiting", False):
                # A wait that ends by itself: retried at this attempt's pace, not counted.
                self._later((task, attempt), self.spec.backoff(attempt))
                return
            if attempt < self.spec.max_attempts:
                # Never sooner than the step said a retry could succeed.
                delay = max(self.spec.backoff(attempt), getattr(error, "retry_after", 0.0))
                log.warning(
                    "task_retry",
                    extra={"event": "task_retry", "queue": self.spec.name, "state": task.state,
                           "attempt": attempt, "delay_s": delay, "error": reason},
                )  # fmt: skip
                self._later((task, attempt + 1), delay)
                return
            self.pending.discard(key)
            # The handler dead-letters on the last attempt when it can; when it could not
            # (the store was down, another delivery held the step) the record stays open
            # and the periodic sweep brings it back.
            log.error(
                "task_dropped",
                extra={"event": "task_dropped", "queue": self.spec.name, "state": task.state,
                       "attempt": attempt, "error": reason},
            )  # fmt: skip
            return
        self.pending.discard(key)


class LocalQueue:
    """TaskQueue that runs tasks in this process on two lanes (inbound, outbound)."""

    def __init__(self, specs: Mapping[str, QueueSpec]) -> None:
        self.specs = specs
        self._lanes: dict[str, _Lane] = {}

    async def queue_figures(self, now: float) -> list[QueueFigures]:
        """Each lane's tasks waiting, running and retrying, read from memory (QueueStats)."""
        return [lane.figures(now) for lane in self._lanes.values()]

    def start(self, handler: TaskHandler) -> None:
        """Start the workers; tasks run `handler(task, attempt)`."""
        self._lanes = {name: _Lane(spec, handler) for name, spec in self.specs.items()}
        for lane in self._lanes.values():
            lane.start()

    async def stop(self) -> None:
        """Stop the workers; waiting tasks are dropped (the sweeper re-queues them)."""
        lanes, self._lanes = self._lanes, {}
        await asyncio.gather(*(lane.stop() for lane in lanes.values()))

    async def enqueue(self, task: Task) -> None:
        lane = self._lanes.get(task.queue)
        if lane is None:
            raise QueueUnavailable("the local queue is not running")
        lane.put(task)

    async def ping(self) -> None:
        if not self._lanes or any(w.done() for ln in self._lanes.values() for w in ln.workers):
            raise QueueUnavailable("the local queue is not running")

    def idle(self) -> bool:
        """No task waiting, delayed or running (for tests and the in-process simulator)."""
        return all(not lane.pending for lane in self._lanes.values())
