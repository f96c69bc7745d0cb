"""Every Redis key pyloto writes, and how long each lives (with the reason why).

All keys start with a configurable prefix (REDIS_KEY_PREFIX) so several environments can
share one Redis. The scripts in redis_store compute delivery keys from the prefix, so the
store expects a single-shard Redis (Memorystore basic or standard tier), not Redis Cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyloto_corp.application.queues import STEP_LEASE_SECONDS

# Meta redelivers a webhook for up to 7 days: a record (which is the dedupe marker) must
# outlive that, so retention below it is refused by the settings.
DEDUPE_WINDOW_SECONDS = 7 * 24 * 3600

# A step's lease (defined with the queues, as every store uses it) outlives the slowest step,
# so a second delivery of the same task never runs the step alongside it; if its holder
# dies, the task's retry may run the step once the lease has expired.
LEASE_SECONDS = STEP_LEASE_SECONDS

# The dry-run outbox keeps at most this many request bodies (they hold phone numbers and
# only serve to inspect what would have been sent).
DRY_RUN_LOG_LENGTH = 10_000


@dataclass(frozen=True)
class RedisKeys:
    """Key names under one prefix."""

    prefix: str = "pyloto"

    def record(self, message_id: str) -> str:
        """Hash of one record (v: version, s: state, o: outbound id, d: JSON); TTL=retention
        because it holds personal data, and it is the dedupe marker for its wamid."""
        return f"{self.prefix}:rec:{message_id}"

    def delivery(self, outbound_id: str) -> str:
        """Hash of the latest delivery status of one sent message; TTL=retention."""
        return f"{self.prefix}:dlv:{outbound_id}"

    def delivery_ref(self, key: str) -> str:
        """Outbound id named by a status's callback data (the record's reply key), so a
        status that arrives before the send was saved still finds its record;
        TTL=retention (the purge cannot name it from the record id, so it expires)."""
        return f"{self.prefix}:dref:{key}"

    @property
    def open_index(self) -> str:
        """Sorted set of non-terminal record ids by last update: the sweeper reads the stuck
        ones by score instead of scanning the keyspace. Members leave on a terminal save."""
        return f"{self.prefix}:open"

    @property
    def failed_index(self) -> str:
        """Sorted set of `failed` record ids by last update: replay finds dead letters by score
        instead of scanning. Members leave when a save moves the record out, or on purge."""
        return f"{self.prefix}:failed"

    @property
    def created_index(self) -> str:
        """Sorted set of record ids by creation time: purge finds expired ones by score."""
        return f"{self.prefix}:created"

    def conversation(self, ref: str) -> str:
        """List of a conversation's last turns (masked text) for LLM#2; expires with
        WhatsApp's 24-hour customer-service window, renewed by every new turn."""
        return f"{self.prefix}:conv:{ref}"

    @property
    def instances(self) -> str:
        """Sorted set of instance ids by their last heartbeat: an instance that stopped
        beating is dead, and the open records it owned are adopted by a live one."""
        return f"{self.prefix}:instances"

    def lease(self, name: str) -> str:
        """Owner of a step's lease; expires after LEASE_SECONDS (or the given length)."""
        return f"{self.prefix}:lease:{name}"

    def pacing(self, ref: str) -> str:
        """Token bucket of one recipient's sends (ref: a keyed hash of the number), so one
        customer's replies stay under Meta's pair rate; expires once the bucket is full."""
        return f"{self.prefix}:pace:{ref}"

    @property
    def dry_run_log(self) -> str:
        """List of dry-run request bodies, newest last, capped at DRY_RUN_LOG_LENGTH and
        expiring after retention of inactivity."""
        return f"{self.prefix}:dryrun:log"

    def dry_run_sent(self, callback_data: str) -> str:
        """Outbound id of the first dry-run send for a record, for at-most-once checks."""
        return f"{self.prefix}:dryrun:cb:{callback_data}"
