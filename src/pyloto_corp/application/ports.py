"""Ports: what the use cases need from the outside world."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pyloto_corp.domain.records import Record, StatusUpdate
from pyloto_corp.domain.statechart import QueueName


class StoreUnavailable(Exception):
    """The store cannot be reached; callers answer 503 so the sender retries."""


class QueueUnavailable(Exception):
    """The queue cannot accept tasks; callers answer 503 so the sender retries."""


class TransientStepError(Exception):
    """A step failed in a way a later attempt may fix; the queue retries the task."""


class PermanentStepError(Exception):
    """A step failed in a way no retry can fix; the record is dead-lettered."""


class StateStore(Protocol):
    """Durable records keyed by wamid, saved under optimistic version checks."""

    async def create_if_absent(self, records: Sequence[Record]) -> list[bool]:
        """Atomically store each record unless its id exists; True where it was created."""

    async def get(self, message_id: str) -> Record | None:
        """The record with its delivery status, or None."""

    async def save(self, record: Record, expected_version: int) -> bool:
        """Store `record` if the stored version is `expected_version`; False on a conflict."""

    async def record_status(self, update: StatusUpdate) -> bool:
        """Keep the delivery status unless a later one is known; True if it moved forward."""

    async def open_records(self, older_than: float) -> list[tuple[str, str]]:
        """(message id, state) of non-terminal records last updated before `older_than`."""

    async def purge(self, created_before: float) -> int:
        """Delete records (and their statuses) created before the retention limit."""

    async def acquire_lease(self, name: str, owner: str, seconds: float) -> bool:
        """Take the lease `name` for `seconds` unless someone else holds it."""

    async def release_lease(self, name: str, owner: str) -> None:
        """Give the lease back if `owner` still holds it."""

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the store answers."""

    async def close(self) -> None:
        """Release connections."""


@dataclass(frozen=True)
class Task:
    """Advance `message_id` from `state`; `queue` is the state's queue."""

    message_id: str
    state: str
    queue: QueueName


TaskHandler = Callable[[Task, int], Awaitable[None]]
DeadLetterHandler = Callable[[Task, str], Awaitable[None]]


class TaskQueue(Protocol):
    """Delivers each task at least once, retrying failures with backoff."""

    async def enqueue(self, task: Task) -> None:
        """Schedule `task`; raises QueueUnavailable when it cannot be accepted."""

    async def ping(self) -> None:
        """Raise QueueUnavailable unless the queue accepts work."""


class Outbox(Protocol):
    """Sends Graph API message requests."""

    async def send(self, body: dict[str, Any]) -> str:
        """Send `body`; the outbound wamid. TransientStepError/PermanentStepError on failure."""

    async def find_sent(self, callback_data: str) -> str | None:
        """The outbound id of an earlier send carrying `callback_data`, if one is known."""
