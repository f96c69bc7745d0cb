"""advance(message_id, expected_state): one transition of one record, idempotently."""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, replace
from typing import TypeVar

from opentelemetry import trace

from pyloto_corp.application.bursts import LOOKBACK, keep_typing, reads_records, superseded
from pyloto_corp.application.conversations import ModeRules
from pyloto_corp.application.handoff import gate
from pyloto_corp.application.llm_steps import CONVERSATION_TURNS, record_names
from pyloto_corp.application.ports import (
    AdvancerStore,
    LeaseHold,
    PermanentStepError,
    StepCommit,
    StepDeferred,
    StoreUnavailable,
    Task,
    TaskQueue,
    TransientStepError,
)
from pyloto_corp.application.queues import STEP_LEASE_SECONDS
from pyloto_corp.application.registry import BUFFERED, GATED_STATES, REGISTRY, SUPERSEDED_STATES
from pyloto_corp.application.step_context import StepContext
from pyloto_corp.application.steps import STEPS
from pyloto_corp.domain.conversation import BOT, Conversation
from pyloto_corp.domain.events import DeadLettered, Event, SendClaimed
from pyloto_corp.domain.machine import LifecycleMachine
from pyloto_corp.domain.privacy import message_ref
from pyloto_corp.domain.records import Record, Turn
from pyloto_corp.domain.writes import NO_WRITES
from pyloto_corp.observability.instruments import Telemetry, context_of, traceparent_of
from pyloto_corp.observability.logging import names_in_scope, scrub_exception

log = logging.getLogger(__name__)

_V = TypeVar("_V")


def _remember(entries: dict[str, tuple[_V, float]], key: str, value: _V, keep: float) -> None:
    """Add `key`, dropping entries older than `keep` seconds (the store has moved past them)."""
    now = time.monotonic()
    for old in [name for name, (_, at) in entries.items() if now - at >= keep]:
        del entries[old]
    entries[key] = (value, now)


@dataclass
class Lease:
    """A step's lease on (record, state), held by one delivery of its task."""

    name: str
    owner: str
    released: bool = False

    def hold(self, seconds: float = 0.0) -> LeaseHold:
        return LeaseHold(self.name, self.owner, seconds)


def pacing_wait(wait: float) -> TransientStepError:
    """The error that defers a send until the customer's pacing bucket has a token."""
    return TransientStepError(
        f"pacing: next send to this customer in {wait:.1f} s", retry_after=wait
    )


@dataclass(frozen=True)
class Held:
    """The next step's lease, taken (or found held by another, `taken` False) by the save
    that moved the record to its state, and the record as saved: that step starts without
    a call to the store."""

    lease: Lease
    taken: bool
    record: Record


@dataclass(frozen=True)
class Then:
    """The next step runs at once in the same delivery; `fresh`: it made the send claim."""

    fresh: bool
    held: Held | None = None


def wake_up(task: Task, at: float) -> Task:
    """`task` to run at `at`, named for that time (a queue takes it as a step of its own,
    and the same wake-up queued twice stays one)."""
    return replace(task, not_before=at, generation=f"wake-{int(at * 1000)}")


class StepBusy(TransientStepError):
    """Another delivery of the same task holds the step's lease: retry later."""


class Advancer:
    """Runs one step of one record: load, check, work, save with a version check, enqueue."""

    def __init__(
        self,
        machine: LifecycleMachine,
        store: AdvancerStore,
        queue: TaskQueue,
        context: StepContext,
        telemetry: Telemetry | None = None,
        modes: ModeRules | None = None,
    ) -> None:
        self.machine = machine
        self.store = store
        self.queue = queue
        self.context = context
        self.telemetry = telemetry or Telemetry()
        # The conversation chart's rules: each mode change a step's save makes is drawn as a
        # span and announced (without a chart, as in unit tests, only drawn).
        self.modes = modes or ModeRules(None)
        # Leases (name → owner) this process could not give back because the store failed
        # mid-step: the task's next delivery here frees them instead of burning attempts on
        # "running in another delivery" until they expire.
        self._unreleased: dict[str, tuple[str, float]] = {}

    def task_for(self, record: Record) -> Task | None:
        """The task that advances `record` from its state (carrying the message's trace);
        None once it is terminal."""
        spec = self.machine.chart.states[record.state]
        if spec.terminal:
            return None
        traceparent = record.trace_context.get("traceparent")
        task = Task(record.message_id, record.state, spec.queue, traceparent=traceparent)
        wake = record.results.wake_at
        if record.state == BUFFERED and wake:
            return wake_up(task, wake)
        return task

    async def advance(
        self,
        message_id: str,
        expected_state: str,
        attempt: int = 1,
        traceparent: str | None = None,
        claim_made_here: bool = False,
        held: Held | None = None,
    ) -> str:
        """Do the step of `expected_state`; a record elsewhere is a no-op. Returns the outcome.

        The step runs under a lease on (record, state), so a second delivery of the same task
        arriving meanwhile is told to retry later instead of doing the work again. It is one
        span, a child of the task's `traceparent` (the span that queued it).
        """
        attributes: dict[str, str | int] = {
            "pyloto.message.ref": message_ref(message_id),
            "pyloto.state.from": expected_state,
            "pyloto.attempt": attempt,
        }
        started = time.perf_counter()
        outcome = "error"
        with self.telemetry.span(
            f"step {expected_state}", parent=context_of(traceparent), attributes=attributes
        ) as span:
            try:
                outcome, then = await self._leased(
                    message_id, expected_state, attempt, claim_made_here, held
                )
            except StepBusy:
                outcome = "busy"
                raise
            finally:
                span.set_attribute("pyloto.outcome", outcome)
                self.telemetry.metrics.step_duration.record(
                    (time.perf_counter() - started) * 1000,
                    {"pyloto.state": expected_state, "pyloto.outcome": outcome},
                )
        if then is None:
            return outcome
        # The event asked for the next step at once, in this delivery: its own span (a child
        # of this one) under its own lease. A send claimed here is sent without reconciling.
        with contextlib.suppress(StepBusy):  # another delivery holds that step: it does it
            return await self.advance(
                message_id,
                outcome,
                attempt,
                traceparent_of(span),
                claim_made_here=then.fresh,
                held=then.held,
            )
        return outcome

    def _new_lease(self, message_id: str, state: str) -> Lease:
        return Lease(f"{message_id}:{state}", f"{self.context.instance_id}:{uuid.uuid4().hex}")

    async def _leased(
        self,
        message_id: str,
        expected_state: str,
        attempt: int,
        claim_made_here: bool,
        held: Held | None,
    ) -> tuple[str, Then | None]:
        """Take the step's lease and load the record (one call to the store; none when the
        previous step's save took the lease), run the step, then save and give the lease
        back (one call, with what the step's event writes): at most two round trips a
        transition."""
        turns: list[Turn] | None = None
        conversation: Conversation | None = None
        records: list[Record] | None = None
        record: Record | None
        if held is not None:
            lease, taken, record = held.lease, held.taken, held.record
        else:
            lease = self._new_lease(message_id, expected_state)
            await self._free_unreleased(lease.name)
            spec = REGISTRY.get(expected_state)
            wanted = CONVERSATION_TURNS if spec is not None and spec.reads_turns else 0
            listed = LOOKBACK if reads_records(expected_state, self.context) else 0
            try:
                load = await self.store.lease_step(
                    lease.name, lease.owner, STEP_LEASE_SECONDS, message_id, wanted, listed
                )
            except StoreUnavailable:
                _remember(self._unreleased, lease.name, lease.owner, STEP_LEASE_SECONDS)
                raise
            taken, record, turns = load.taken, load.record, load.turns
            conversation, records = load.conversation, load.records
        if not taken:
            raise StepBusy("this step is running in another delivery of the task")
        try:
            return await self._advance(
                record,
                message_id,
                expected_state,
                attempt,
                lease,
                claim_made_here,
                turns,
                conversation,
                records,
            )
        finally:
            if not lease.released:
                try:
                    await self.store.release_lease(lease.name, lease.owner)
                except StoreUnavailable:
                    _remember(self._unreleased, lease.name, lease.owner, STEP_LEASE_SECONDS)
                    raise

    async def _free_unreleased(self, lease: str) -> None:
        """Give back a lease an earlier, finished delivery in this process could not."""
        held = self._unreleased.get(lease)
        if held is not None:
            await self.store.release_lease(lease, held[0])  # only if that owner still holds it
            self._unreleased.pop(lease, None)

    async def _requeue_current(self, record: Record) -> None:
        """Queue the step of the state the record is in.

        A delivery that finds its record moved on may be the retry of one that saved the
        transition and died (or lost the store's answer) before queuing the next step: any
        instance, not only the one that saved, must be able to put that step back. Queues
        deduplicate (task names, pending keys), so for an ordinary duplicate this is a no-op.
        """
        task = self.task_for(record)
        if task is not None:
            await self.queue.enqueue(task)

    async def _advance(
        self,
        record: Record | None,
        message_id: str,
        expected_state: str,
        attempt: int,
        lease: Lease,
        claim_made_here: bool,
        turns: list[Turn] | None,
        conversation: Conversation | None = None,
        records: list[Record] | None = None,
    ) -> tuple[str, Then | None]:
        """The outcome, and whether the next step runs at once in this delivery."""
        if record is None:
            log.warning(
                "task_for_unknown_record",
                extra={"event": "task_for_unknown_record", "ref": message_ref(message_id)},
            )
            return "unknown", None
        if record.state != expected_state or record.state not in STEPS:
            await self._requeue_current(record)
            return "stale", None  # moved on, or terminal: a terminal state has no step
        started = self.context.clock()
        try:
            event = await self._run_step(record, claim_made_here, turns, conversation, records)
        except StepDeferred as deferred:
            # Nothing saved: the same step runs again then (a scheduled task of its own).
            task = self.task_for(record)
            if task is not None:
                await self.queue.enqueue(wake_up(task, deferred.until))
            return "deferred", None
        except PermanentStepError as error:
            # Under the step's lease, the record as loaded: one call to the store.
            await self._dead_letter_loaded(record, f"permanent: {error}", 0, lease)
            return "failed", None
        following = None
        if event.continues:
            following = self._new_lease(message_id, self.machine.fire(record.state, event.trigger))
        dest, held = await self._commit(
            record, event, started, attempt, lease=lease, next_lease=following
        )
        if dest == "stale":
            return dest, None
        if event.retries:
            # Its reason is an outside system's error text, which may quote the customer.
            retry = TransientStepError(f"{event.trigger}: {event.retry_reason()}")
            scrub_exception(retry, record_names(record))
            raise retry
        if event.continues:
            return dest, Then(fresh=isinstance(event, SendClaimed) and event.fresh, held=held)
        return dest, None

    def continued_states(self, state: str) -> list[str]:
        """States whose step the step of `state` may run in the same delivery."""
        spec = REGISTRY.get(state)
        emits = spec.emits if spec is not None else ()
        return [self.machine.fire(state, event.trigger) for event in emits if event.continues]

    async def _run_step(
        self,
        record: Record,
        claim_made_here: bool,
        turns: list[Turn] | None,
        conversation: Conversation | None = None,
        records: list[Record] | None = None,
    ) -> Event:
        """The step of the record's state, after the conversation's gate (which may hold
        the message for an agent instead, or hand the conversation to one). Its exceptions
        leave with personal data redacted from their text: queues log them, and the last one
        becomes the failure reason."""
        names = record_names(record)
        context = replace(
            self.context,
            claim_made_here=claim_made_here or self.context.claim_made_here,
            turns=turns,
            conversation=conversation,
            records=records,
        )
        with names_in_scope(*names):
            try:
                gated = await gate(record, context) if record.state in GATED_STATES else None
                if isinstance(gated, Event):
                    return gated
                merged = superseded(record, context) if gated is None else None
                if merged is not None:
                    return merged
                shown = None
                if record.state in SUPERSEDED_STATES:
                    shown = await keep_typing(record, context)
                event = await STEPS[record.state](record, context)
                if gated is not None:
                    event = replace(event, conversation=gated)
                return event if shown is None else replace(event, typing_at=shown)
            except Exception as error:
                scrub_exception(error, names)
                raise

    async def deliver(
        self,
        message_id: str,
        expected_state: str,
        attempt: int,
        max_attempts: int,
        traceparent: str | None = None,
    ) -> str:
        """One delivery of a queued task. A failure on the queue's last attempt dead-letters
        the record (the queue would drop the task silently); earlier ones go back to it."""
        try:
            return await self.advance(message_id, expected_state, attempt, traceparent)
        except StepBusy:
            raise  # not a failure of this step: the delivery holding it decides its fate
        except Exception as error:
            # A wait that ends by itself (a live send claim) is never a reason to dead-letter.
            waiting = isinstance(error, TransientStepError) and error.waiting
            if waiting or attempt < max_attempts:
                raise
            reason = f"out of attempts ({attempt}): {type(error).__name__}: {error}"[:300]
            # The step may have moved the record on and failed in the next step it ran.
            for state in (expected_state, *self.continued_states(expected_state)):
                if await self.dead_letter(message_id, state, reason, attempt):
                    return "failed"
            raise

    async def dead_letter(
        self, message_id: str, expected_state: str, reason: str, attempt: int = 0
    ) -> bool:
        """Move the record to `failed` with `reason` if it is still in `expected_state`."""
        record = await self.store.get(message_id)
        if record is None or record.state != expected_state:
            return False
        return await self._dead_letter_loaded(record, reason, attempt)

    async def _dead_letter_loaded(
        self, record: Record, reason: str, attempt: int, lease: Lease | None = None
    ) -> bool:
        """Move `record` (as loaded) to `failed` with `reason`, giving back `lease` in the
        same call; False if it changed since it was loaded."""
        message_id, expected_state = record.message_id, record.state
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
        outcome, _ = await self._commit(
            record, DeadLettered(reason), started, attempt=attempt, lease=lease
        )
        return outcome != "stale"

    async def _commit(
        self,
        record: Record,
        event: Event,
        started: float,
        attempt: int,
        generation: str = "",
        lease: Lease | None = None,
        next_lease: Lease | None = None,
    ) -> tuple[str, Held | None]:
        """Save the transition `event` fires (giving back `lease`, writing what the event
        writes and taking `next_lease` in the same call), then queue the next step.
        "stale" when the record changed since it was loaded; the next lease as held."""
        dest = self.machine.fire(record.state, event.trigger)
        write = event.conversation
        if write is not None and write.mode is not None:
            self.modes.check(write.expect_mode or BOT, write)  # the conversation chart's rule
        now = self.context.clock()
        duration_ms = round((now - started) * 1000, 3)
        moved = replace(
            record.apply(event, dest, now, duration_ms, attempt),
            trace_context=self._trace_context(record),
        )
        saved, held = await self._save(moved, record.version, event, lease, next_lease)
        if not saved:
            return "stale", None
        self._describe(record, moved, event.trigger, duration_ms)
        if write is not None and write.mode is not None:
            key = write.key or moved.conversation
            await self.modes.changed(key, write.expect_mode or BOT, write, 0)
        log.info(
            "transition",
            extra={
                "event": "transition",
                "ref": message_ref(record.message_id),
                "source": record.state,
                "dest": dest,
                "trigger": event.trigger,
                "attempt": attempt,
                "duration_ms": duration_ms,
            },
        )
        # Nothing to queue when this delivery goes on with the next step, or fails to be retried.
        task = None if event.continues or event.retries else self.task_for(moved)
        if task is not None:
            await self.queue.enqueue(replace(task, generation=generation) if generation else task)
        return dest, held

    async def _save(
        self,
        moved: Record,
        expected_version: int,
        event: Event,
        lease: Lease | None,
        next_lease: Lease | None,
    ) -> tuple[bool, Held | None]:
        """The save, as one `StepCommit` with what the event writes; raises the pacing wait
        when the claim's token was not free, so nothing was saved and the queue retries."""
        if lease is None:
            # Only a dead letter or an operator's event is saved outside a step's lease, and
            # neither writes anything besides the record.
            assert event.writes() == NO_WRITES, f"{event.trigger} needs a step's commit"
            return await self.store.save(moved, expected_version), None
        following = next_lease.hold(STEP_LEASE_SECONDS) if next_lease is not None else None
        commit = StepCommit(moved, expected_version, lease.hold(), following, event.writes())
        try:
            result = await self.store.finish_step(commit)
        except StoreUnavailable:
            if next_lease is not None:  # the call may have taken it before its answer was lost
                _remember(self._unreleased, next_lease.name, next_lease.owner, STEP_LEASE_SECONDS)
            raise
        lease.released = True
        if result.mode_changed:
            # Another message or an agent moved the conversation meanwhile: nothing was
            # saved, and the retry runs the gate again on the conversation as it is now.
            raise TransientStepError("the conversation's mode changed while the step ran")
        if result.customer:  # resolved by the save itself (the accept's customer key)
            moved = replace(moved, conversation=result.customer)
        if result.wait > 0:
            raise pacing_wait(result.wait)
        if not result.saved or next_lease is None:
            return result.saved, None
        return True, Held(next_lease, result.next_taken, moved)

    def _trace_context(self, record: Record) -> dict[str, str]:
        """The record's trace context, pointing at the current span (the next task's parent)
        when there is one; kept as it was otherwise (a dead letter outside any span)."""
        traceparent = traceparent_of(trace.get_current_span())
        return {"traceparent": traceparent} if traceparent else record.trace_context

    def _describe(self, record: Record, moved: Record, trigger: str, duration_ms: float) -> None:
        """The transition on the current span, and the fallback counter."""
        span = trace.get_current_span()
        span.set_attribute("pyloto.state.to", moved.state)
        span.set_attribute("pyloto.trigger", trigger)
        span.set_attribute("pyloto.step.duration_ms", duration_ms)
        # Hashed on export; the BSUID when known, so a customer's traces correlate whether or
        # not a message showed their number.
        span.set_attribute("enduser.id", record.inbound.bsuid or record.inbound.sender)
        if trigger == "fall_back" and moved.fallback_reason:
            span.set_attribute("pyloto.fallback.reason", moved.fallback_reason)
            self.telemetry.metrics.fallbacks.add(
                1, {"pyloto.fallback.reason": moved.fallback_reason}
            )

    async def fire_manual(self, record: Record, event: Event, generation: str) -> str:
        """Apply an operator's event to `record` (as loaded): a versioned save with its
        history entry, then the new state's task under `generation` (so a queue that refuses
        a repeated step takes it). The new state, or "stale" if the record changed meanwhile.
        """
        started = self.context.clock()
        dest, _ = await self._commit(record, event, started, 0, generation)
        return dest
