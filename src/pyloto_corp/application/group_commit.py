"""Group commit: webhooks that arrive together share one store write.

Each webhook is acknowledged only after the write that holds its messages has returned (a
SQLite transaction committed with `synchronous=FULL`, or one Redis script call), so nothing
acknowledged can be lost; what changes is how many webhooks one write carries. The first
webhook of a burst starts a write after the event loop has run the requests already read
in the same tick; webhooks that arrive while that write is in flight (its fsync, its round
trip) wait for the next one. Under load the batch grows with the write's own latency; alone,
a webhook waits one loop iteration at most.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from pyloto_corp.application.ports import RecordStore
from pyloto_corp.domain.records import Record

_Waiter = tuple[Sequence[Record], "asyncio.Future[list[bool]]"]


class GroupCommit:
    """`create_if_absent` for many concurrent callers, one store call per group."""

    def __init__(self, store: RecordStore) -> None:
        self.store = store
        self._pending: list[_Waiter] = []
        self._writer: asyncio.Task[None] | None = None

    async def create_if_absent(self, records: Sequence[Record]) -> list[bool]:
        """Whether each record was new, once the write holding it has returned; a message
        id given by several callers of one group is new for the first of them only."""
        if not records:
            return []
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[list[bool]] = loop.create_future()
        self._pending.append((records, waiter))
        if self._writer is None:
            self._writer = loop.create_task(self._write_groups())
        return await waiter

    async def _write_groups(self) -> None:
        try:
            await asyncio.sleep(0)  # let the requests read in this tick join the group
            while self._pending:
                group, self._pending = self._pending, []
                await self._write(group)
        except BaseException as error:  # cancelled at shutdown: no caller waits forever
            for _, waiter in self._pending:
                _fail(waiter, error)
            self._pending = []
            raise
        finally:
            self._writer = None

    async def _write(self, group: list[_Waiter]) -> None:
        unique: dict[str, Record] = {}
        for records, _ in group:
            for record in records:
                unique.setdefault(record.message_id, record)
        try:
            created = await self.store.create_if_absent(list(unique.values()))
        except BaseException as error:
            for _, waiter in group:
                _fail(waiter, error)
            if not isinstance(error, Exception):
                raise
            return
        new = {message_id for message_id, is_new in zip(unique, created, strict=True) if is_new}
        for records, waiter in group:
            answer = []
            for record in records:
                is_new = record.message_id in new
                new.discard(record.message_id)  # the first caller that gave it
                answer.append(is_new)
            if not waiter.done():
                waiter.set_result(answer)


def _fail(waiter: asyncio.Future[list[bool]], error: BaseException) -> None:
    if waiter.done():
        return
    if isinstance(error, Exception):
        waiter.set_exception(error)
    else:
        waiter.cancel()
