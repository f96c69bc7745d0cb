"""Re-queue records stuck in a non-terminal state; purge records past retention."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from pyloto_corp.application.ports import (
    Adoption,
    InstanceRegistry,
    RecordStore,
    StoreUnavailable,
    Task,
    TaskQueue,
)
from pyloto_corp.domain.statechart import Statechart
from pyloto_corp.observability.instruments import Telemetry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepResult:
    """What one sweep did."""

    requeued: int
    purged: int
    # Conversations given back to the bot after HANDOFF_IDLE_SECONDS without an agent.
    released: int = 0


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


class Sweeper:
    """The sweep of one instance: on demand (POST /internal/sweep, start-up) and, with the
    local queue, every `interval_seconds` in the background."""

    def __init__(
        self,
        store: RecordStore,
        queue: TaskQueue,
        chart: Statechart,
        clock: Callable[[], float],
        retention_seconds: float,
        purge_outbox: Callable[[float], Awaitable[int]] | None = None,
        telemetry: Telemetry | None = None,
        release_idle: Callable[[], Awaitable[int]] | None = None,
    ) -> None:
        """`purge_outbox(created_before)` drops what the dry-run outbox keeps past retention;
        `release_idle()` gives back to the bot the conversations no agent touched for
        HANDOFF_IDLE_SECONDS (how many)."""
        self.release_idle = release_idle
        self.store = store
        self.queue = queue
        self.chart = chart
        self.clock = clock
        self.retention_seconds = retention_seconds
        self.purge_outbox = purge_outbox
        self._task: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._last_beat: float | None = None
        self._store_run: str | None = None
        self.telemetry = telemetry or Telemetry()

    async def sweep(self, stuck_after_seconds: float) -> SweepResult:
        """Re-queue stuck records and purge those (and dry-run requests) past retention."""
        result = await sweep(
            self.store,
            self.queue,
            self.chart,
            self.clock,
            stuck_after_seconds=stuck_after_seconds,
            retention_seconds=self.retention_seconds,
        )
        if self.purge_outbox is not None:
            await self.purge_outbox(self.clock() - self.retention_seconds)
        if self.release_idle is not None:
            result = replace(result, released=await self.release_idle())
        return result

    def start(self, interval_seconds: float, stuck_after_seconds: float) -> None:
        """Sweep every `interval_seconds` until `stop()`; a failed sweep is logged."""
        self._task = asyncio.create_task(
            self._periodically(interval_seconds, stuck_after_seconds), name="pyloto-sweeper"
        )

    async def adopt(
        self, registry: InstanceRegistry, dead_after_seconds: float, adopting: bool = True
    ) -> int:
        """Beat, and queue the step of each record adopted from a dead instance (none when
        not `adopting`: with Cloud Tasks the tasks outlive instances, and the beat only
        checks that the store kept what it was given).

        Adoption waits for one beat of this instance that follows another by less than
        `dead_after_seconds`: after an outage of the store every instance has missed its
        beats, and the first to come back must not take the others' records for orphans.
        """
        now = self.clock()
        steady = self._last_beat is not None and now - self._last_beat < dead_after_seconds
        dead_after = dead_after_seconds if steady and adopting else float("inf")
        beat = await registry.adopt_orphans(now, dead_after)
        self._check_continuity(beat, now)
        self._last_beat, self._store_run = now, beat.store_run
        adopted = beat.adopted
        for message_id, state in adopted:
            spec = self.chart.states.get(state)
            if spec is None or spec.terminal:
                continue
            task = Task(message_id, state, spec.queue, generation=f"adopt-{now:.0f}")
            await self.queue.enqueue(task)
        if adopted:
            log.warning(
                "orphans_adopted",
                extra={"event": "orphans_adopted", "adopted_count": len(adopted)},
            )
        return len(adopted)

    def _check_continuity(self, beat: Adoption, now: float) -> None:
        """An ERROR line and a count when the store forgot this instance's last beat: it lost
        the writes made since (a Redis restarted without persistence, or from an old
        snapshot), acknowledged messages among them. The line gives the window to recover."""
        if self._last_beat is None:
            return
        restarted = self._store_run is not None and beat.store_run != self._store_run
        remembered = beat.remembered_beat
        if remembered is not None and remembered >= self._last_beat:
            if restarted:
                log.warning("store_restarted", extra={"event": "store_restarted"})
            return
        self.telemetry.metrics.store_data_lost.add(1)
        log.error(
            "store_data_lost",
            extra={
                "event": "store_data_lost",
                "store_restarted": restarted,
                # Writes after this instant may be gone (None: everything before `until`).
                "lost_since": remembered,
                "until": now,
            },
        )

    def watch(
        self,
        registry: InstanceRegistry,
        interval_seconds: float,
        dead_after_seconds: float,
        adopting: bool = True,
    ) -> None:
        """Beat (and adopt, if `adopting`) every `interval_seconds` until `stop()`; a failure
        is logged."""
        self._watch = asyncio.create_task(
            self._watching(registry, interval_seconds, dead_after_seconds, adopting),
            name="pyloto-instance-watch",
        )

    async def stop(self) -> None:
        """Stop the background sweeps and the instance watch."""
        tasks = [task for task in (self._task, self._watch) if task is not None]
        self._task = self._watch = None
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watching(
        self,
        registry: InstanceRegistry,
        interval_seconds: float,
        dead_after_seconds: float,
        adopting: bool,
    ) -> None:
        while self._watch is not None:  # stop() clears it, should a cancellation be lost
            try:
                await self.adopt(registry, dead_after_seconds, adopting)
            except StoreUnavailable as error:
                # An outage: one line a beat, not a traceback (the store's own error, no data).
                log.warning(
                    "instance_watch_failed",
                    extra={"event": "instance_watch_failed", "detail": str(error)},
                )
            except Exception:
                log.exception("instance_watch_failed", extra={"event": "instance_watch_failed"})
            await asyncio.sleep(interval_seconds)

    async def _periodically(self, interval_seconds: float, stuck_after_seconds: float) -> None:
        while self._task is not None:  # stop() clears it, should a cancellation be lost
            await asyncio.sleep(interval_seconds)
            try:
                await self.sweep(stuck_after_seconds)
            except Exception:
                log.exception("sweep_failed", extra={"event": "sweep_failed"})
