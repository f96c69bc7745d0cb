"""Acknowledge only what the store would keep through a crash of it (and of this process).

On Redis that means an append-only file (AOF) fsynced before Redis answers a write
(`appendfsync always`): Redis writes and fsyncs the AOF before it sends the replies of the
commands it ran (https://redis.io/docs/latest/operate/oss_and_stack/management/persistence/).
RDB snapshots keep only what the last snapshot held, and `appendfsync everysec` leaves up
to about a second of answered writes in the operating system's cache, lost if Redis's
machine goes down (not if only the Redis process dies, unless its disk stalls: Redis then
holds its AOF writes back for up to 2 s, still answering). REDIS_DURABILITY says what is
accepted; anything less is refused at start-up and, while running, answered with 503 (Meta
retries a webhook for 7 days) until it holds again.

The check runs at start-up, every CHECK_INTERVAL_SECONDS, again before a webhook is
accepted after any store failure (a reconnect may reach a Redis started otherwise), and
inside the very script that creates the records (AOF on, see adapters/redis/scripts/create.lua),
so a Redis whose AOF is switched off acknowledges nothing more from that instant.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from pyloto_corp.application.ports import StoreNotDurable, StoreUnavailable

log = logging.getLogger(__name__)

Required = Literal["always", "everysec", "none"]
# How often a running instance checks the store's persistence; it is also checked inside
# every create, so this bounds only how late an fsync policy change is seen.
CHECK_INTERVAL_SECONDS = 1.0
# While the verdict is not "durable", a webhook re-checks at most this often: an outage or a
# flood of webhooks costs one check per interval, not one per request.
RECHECK_SECONDS = 0.5
_UNCHECKED = "the store's persistence has not been checked yet"
_ACCEPT = "or set REDIS_ALLOW_NO_PERSISTENCE=true (REDIS_DURABILITY=none) to accept losing them"


@dataclass(frozen=True)
class Persistence:
    """How a Redis keeps its writes: AOF on or off, its `appendfsync` (None when CONFIG is
    refused, as on Memorystore), and whether RDB snapshots are on (None: unknown)."""

    aof: bool
    fsync: str | None
    rdb: bool | None

    @property
    def mode(self) -> str:
        """`aof`, `rdb`, `aof+rdb`, `none`, or `unknown` (AOF off and CONFIG refused)."""
        if self.rdb is None:
            return "aof" if self.aof else "unknown"
        modes = [mode for mode, on in (("aof", self.aof), ("rdb", self.rdb)) if on]
        return "+".join(modes) or "none"


def refusal(
    persistence: Persistence, required: Required, declared_fsync: str | None = None
) -> str | None:
    """Why a store persisting so must not acknowledge webhooks under `required`, or None.
    `declared_fsync` (REDIS_APPENDFSYNC) stands for the fsync policy a Redis that refuses
    CONFIG does not show; ignored where CONFIG answers."""
    if required == "none":
        return None
    where = "the Redis at REDIS_URL"
    if not persistence.aof:
        if persistence.rdb is None:
            kept = "has no AOF (and refuses CONFIG, so its snapshots cannot be read)"
        elif persistence.rdb:
            kept = "persists only RDB snapshots (what came after the last one is lost)"
        else:
            kept = "has neither AOF nor RDB persistence"
        return (
            f"{where} {kept}, so a crash of it loses acknowledged messages: enable "
            f"`appendonly yes` with `appendfsync always`, {_ACCEPT}"
        )
    fsync = persistence.fsync or declared_fsync
    if fsync == "always" or (fsync == "everysec" and required == "everysec"):
        return None
    if fsync is None:
        if required == "everysec":
            return None  # AOF is on; Memorystore fsyncs at least every second
        return (
            f"{where} refuses CONFIG, so whether its AOF is fsynced on every write cannot be "
            "read: set REDIS_APPENDFSYNC to its sync setting (`always`), or "
            f"REDIS_DURABILITY=everysec to accept losing up to a second, {_ACCEPT}"
        )
    window = "about a second" if fsync == "everysec" else "up to 30 s"
    allowed = "" if fsync == "no" else ", or set REDIS_DURABILITY=everysec to accept that"
    return (
        f"{where} fsyncs its AOF `{fsync}`, so a crash of its machine loses {window} of "
        f"acknowledged messages: set `appendfsync always`{allowed}, {_ACCEPT}"
    )


class DurabilityGate:
    """Whether the store holds what it acknowledges now, kept by periodic checks; webhooks
    ask `admit()` before they are stored."""

    def __init__(
        self,
        probe: Callable[[], Awaitable[Persistence]],
        required: Required,
        clock: Callable[[], float] = time.monotonic,
        declared_fsync: str | None = None,
    ) -> None:
        """`probe` reads the store's persistence (StoreUnavailable when it cannot);
        `declared_fsync` as in `refusal`."""
        self.probe = probe
        self.required = required
        self.declared_fsync = declared_fsync
        self.clock = clock
        self.reason: str | None = _UNCHECKED
        # How the store persists (None until it answered a check), and whether the last
        # check found it refusing (rather than not answering).
        self.mode: str | None = None
        self._refusing = False
        self._checked_at = float("-inf")
        self._checking: asyncio.Task[str | None] | None = None
        self._watch: asyncio.Task[None] | None = None

    async def check(self) -> str | None:
        """Read the store's persistence now: why it does not hold (None when it does). One
        check runs at a time; callers that come meanwhile share its answer."""
        if self._checking is None:
            self._checking = asyncio.get_running_loop().create_task(self._check())
            self._checking.add_done_callback(self._checked)
        return await asyncio.shield(self._checking)

    def _checked(self, task: asyncio.Task[str | None]) -> None:
        if self._checking is task:
            self._checking = None

    async def _check(self) -> str | None:
        try:
            persistence = await self.probe()
        except StoreUnavailable as error:
            # Unknown until the store answers: nothing is acknowledged meanwhile. No line:
            # the outage is logged where it is met.
            self._checked_at = self.clock()
            self.mode = None
            self.reason = f"the store did not answer: {error}"
            return self.reason
        self._checked_at = self.clock()
        self.mode = persistence.mode
        self._set(refusal(persistence, self.required, self.declared_fsync))
        return self.reason

    def _set(self, reason: str | None) -> None:
        """Keep the verdict of a store that answered; one line when it starts or stops
        refusing (never one per request)."""
        self.reason = reason
        if reason is not None and not self._refusing:
            log.error(
                "store_not_durable",
                extra={"event": "store_not_durable", "mode": self.mode, "detail": reason},
            )
        elif reason is None and self._refusing:
            log.warning("store_durable", extra={"event": "store_durable", "mode": self.mode})
        self._refusing = reason is not None

    def invalidate(self) -> None:
        """A store call failed: check again before the next webhook is acknowledged (the
        connection that comes back may reach a Redis started without persistence)."""
        self._checked_at = float("-inf")
        if self.reason is None:
            self.reason = _UNCHECKED

    async def admit(self) -> None:
        """Raise StoreNotDurable unless the store holds what it acknowledges; re-checks
        first, at most every RECHECK_SECONDS, while it does not."""
        if self.reason is None:
            return
        if self.clock() - self._checked_at >= RECHECK_SECONDS:
            await self.check()
        if self.reason is None:
            return
        if self.mode is None:
            raise StoreUnavailable(self.reason)
        raise StoreNotDurable(self.reason)

    def watch(self, interval_seconds: float = CHECK_INTERVAL_SECONDS) -> None:
        """Check every `interval_seconds` until `stop()`."""
        self._watch = asyncio.create_task(self._watching(interval_seconds), name="pyloto-durable")

    async def stop(self) -> None:
        """Stop the periodic check, and a check still running."""
        tasks = [task for task in (self._watch, self._checking) if task is not None]
        self._watch = None
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watching(self, interval_seconds: float) -> None:
        while self._watch is not None:
            try:
                await self.check()
            except Exception:
                log.exception("durability_check_failed", extra={"event": "durability_check_failed"})
            await asyncio.sleep(interval_seconds)
