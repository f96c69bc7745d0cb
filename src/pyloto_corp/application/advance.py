"""advance(message_id, expected_state): one transition of one record, idempotently."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from pyloto_corp.application.ports import (
    PermanentStepError,
    StateStore,
    Task,
    TaskQueue,
    TransientStepError,
)
from pyloto_corp.application.queues import STEP_LEASE_SECONDS
from pyloto_corp.application.steps import STEPS, ClaimLost, StepContext
from pyloto_corp.domain.machine import LifecycleMachine
from pyloto_corp.domain.privacy import message_ref
from pyloto_corp.domain.records import HistoryEntry, Record

log = logging.getLogger(__name__)


class Advancer:
    """Runs one step of one record: load, check, work, save with a version check, enqueue."""

    def __init__(
        self,
        machine: LifecycleMachine,
        store: StateStore,
        queue: TaskQueue,
        context: StepContext,
    ) -> None:
        self.machine = machine
        self.store = store
        self.queue = queue
        self.context = context

    def task_for(self, record: Record) -> Task | None:
        """The task that advances `record` from its state; None once it is terminal."""
        spec = self.machine.chart.states[record.state]
        if spec.terminal:
            return None
        return Task(record.message_id, record.state, spec.queue)

    async def advance(self, message_id: str, expected_state: str, attempt: int = 1) -> str:
        """Do the step of `expected_state`; a record elsewhere is a no-op. Returns the outcome.

        The step runs under a lease on (record, state), so a second delivery of the same task
        arriving meanwhile is told to retry later instead of doing the work again.
        """
        lease = f"{message_id}:{expected_state}"
        owner = self.context.instance_id
        if not await self.store.acquire_lease(lease, owner, STEP_LEASE_SECONDS):
            raise TransientStepError("this step is running in another delivery of the task")
        try:
            return await self._advance(message_id, expected_state, attempt)
        finally:
            await self.store.release_lease(lease, owner)

    async def _advance(self, message_id: str, expected_state: str, attempt: int) -> str:
        record = await self.store.get(message_id)
        if record is None:
            log.warning(
                "task_for_unknown_record",
                extra={"event": "task_for_unknown_record", "ref": message_ref(message_id)},
            )
            return "unknown"
        if record.state != expected_state or record.state not in STEPS:
            return "stale"  # moved on, or terminal: a terminal state has no step to run
        started = self.context.clock()
        try:
            outcome = await STEPS[record.state](record, self.context)
        except ClaimLost:
            return "stale"
        except PermanentStepError as error:
            await self.dead_letter(message_id, expected_state, f"permanent: {error}")
            return "failed"
        return await self._commit(record, outcome.trigger, outcome.updates, started, attempt)

    async def dead_letter(self, message_id: str, expected_state: str, reason: str) -> bool:
        """Move the record to `failed` with `reason` if it is still in `expected_state`."""
        record = await self.store.get(message_id)
        if record is None or record.state != expected_state:
            return False
        log.error(
            "record_dead_lettered",
            extra={
                "event": "record_dead_lettered",
                "ref": message_ref(message_id),
                "state": expected_state,
                "reason": reason,
            },
        )
        started = self.context.clock()
        outcome = await self._commit(
            record, "dead_letter", {"failure_reason": reason}, started, attempt=0
        )
        return outcome != "stale"

    async def _commit(
        self,
        record: Record,
        trigger: str,
        updates: dict[str, Any],
        started: float,
        attempt: int,
    ) -> str:
        dest = self.machine.fire(record.state, trigger)
        now = self.context.clock()
        entry = HistoryEntry(
            source=record.state,
            dest=dest,
            trigger=trigger,
            at=now,
            duration_ms=round((now - started) * 1000, 3),
            attempt=attempt,
        )
        attempts = dict(record.attempts)
        attempts[record.state] = max(attempt, attempts.get(record.state, 0))
        moved = replace(
            record,
            **updates,
            state=dest,
            version=record.version + 1,
            updated_at=now,
            history=[*record.history, entry],
            attempts=attempts,
        )
        if not await self.store.save(moved, expected_version=record.version):
            return "stale"
        log.info(
            "transition",
            extra={
                "event": "transition",
                "ref": message_ref(record.message_id),
                "source": record.state,
                "dest": dest,
                "trigger": trigger,
                "attempt": attempt,
                "duration_ms": entry.duration_ms,
            },
        )
        task = self.task_for(moved)
        if task is not None:
            await self.queue.enqueue(task)
        return dest
