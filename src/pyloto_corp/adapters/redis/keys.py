"""Every Redis key pyloto writes, and how long each lives (with the reason why).

All keys start with a configurable prefix (REDIS_KEY_PREFIX) so several environments can
share one Redis. The scripts (scripts/*.lua) compute delivery keys from the prefix, so the
store expects a single-shard Redis (Memorystore basic or standard tier), not Redis Cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyloto_corp.application.queues import STEP_LEASE_SECONDS
from pyloto_corp.domain.ops_metrics import (
    DAY,
    DAY_BUCKETS_KEPT_SECONDS,
    HOUR,
    HOUR_BUCKETS_KEPT_SECONDS,
    MINUTE,
    MINUTE_BUCKETS_KEPT_SECONDS,
)

# Meta redelivers a webhook for up to 7 days: a record (which is the dedupe marker) must
# outlive that, so retention below it is refused by the settings.
DEDUPE_WINDOW_SECONDS = 7 * 24 * 3600

# A record key outlives the retention by this much: the sweeper's purge (every few minutes,
# from each instance with the local queue or from Cloud Scheduler with Cloud Tasks) deletes
# it at the retention, along with its members of the console's indexes (state, last update,
# fallback reason), so those never count a record that expired on its own. The TTL is only
# the safety net for a deployment whose sweeps stopped.
RECORD_TTL_GRACE_SECONDS = 24 * 3600

# How long a bucket of the console's counters lives after its last increment: the keep of
# its resolution (domain.ops_metrics) plus the bucket's own width, so a bucket is gone only
# once it is older than the keep (reads skip older ones anyway).
COUNTER_TTL_SECONDS = {
    MINUTE: MINUTE_BUCKETS_KEPT_SECONDS + MINUTE,
    HOUR: HOUR_BUCKETS_KEPT_SECONDS + HOUR,
    DAY: DAY_BUCKETS_KEPT_SECONDS + DAY,
}

# A step's lease (defined with the queues, as every store uses it) outlives the slowest step,
# so a second delivery of the same task never runs the step alongside it; if its holder
# dies, the task's retry may run the step once the lease has expired.
LEASE_SECONDS = STEP_LEASE_SECONDS

# The console's tally of adoptions (instances:adopted) lives this long after the last one:
# a week of crashes to look back on, and the ids of instances long gone drop out with it.
ADOPTED_TTL_SECONDS = 7 * 24 * 3600

# The dry-run outbox keeps at most this many request bodies (they hold phone numbers and
# only serve to inspect what would have been sent).
DRY_RUN_LOG_LENGTH = 10_000


@dataclass(frozen=True)
class RedisKeys:
    """Key names under one prefix."""

    prefix: str = "pyloto"

    def record(self, message_id: str) -> str:
        """Hash of one record (v: version, s: state, o: outbound id, d: JSON, q: the instance
        that wrote it last, c: its conversation, f: its fallback reason or ''); it is the
        dedupe marker for its wamid. It holds personal data: purge deletes it at the
        retention, and its TTL (retention + RECORD_TTL_GRACE_SECONDS) is the safety net."""
        return f"{self.prefix}:rec:{message_id}"

    def delivery(self, outbound_id: str) -> str:
        """Hash of the latest delivery status of one sent message; TTL=retention."""
        return f"{self.prefix}:dlv:{outbound_id}"

    def billed(self, outbound_id: str) -> str:
        """Marker of an outbound message counted as billable (scripts/billable.lua), so
        its repeated statuses count it once; lives as long as the records."""
        return f"{self.prefix}:billed:{outbound_id}"

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

    @property
    def updated_index(self) -> str:
        """Sorted set of every record id by last update: the console's pages of records,
        newest first, without a filter. Members move with each save and leave on purge."""
        return f"{self.prefix}:updated"

    def state_index(self, state: str) -> str:
        """Sorted set of the ids of the records in `state` now, by last update: its ZCARD is
        the console's count of the state, its range a page filtered by state. A save moves
        the id from the old state's set to the new one's; purge removes it."""
        return f"{self.prefix}:state:{state}"

    def fallback_index(self, reason: str) -> str:
        """Sorted set of the ids of records with fallback reason `reason`, by last update:
        the console's pages filtered by reason. Members leave on purge."""
        return f"{self.prefix}:fallback:{reason}"

    @property
    def fallback_reasons(self) -> str:
        """Set of every reason that has a fallback_index, so purge can clear a record whose
        hash is gone (expired) from each without knowing its reason."""
        return f"{self.prefix}:fallbacks"

    def counters(self, width: int, bucket: int) -> str:
        """Hash of the console's counters {name: count} of the bucket of `width` seconds
        starting at `bucket` (names and widths in domain.ops_metrics), incremented in the
        script that saves each transition; expires COUNTER_TTL_SECONDS[width] after its
        last increment."""
        return f"{self.prefix}:ops:{width}:{bucket}"

    def conversation(self, ref: str) -> str:
        """List of a conversation's last turns (masked text) for LLM#2; expires with
        WhatsApp's 24-hour customer-service window, renewed by every new turn."""
        return f"{self.prefix}:conv:{ref}"

    def chat(self, key: str) -> str:
        """Hash of one customer's conversation (domain.conversation.Conversation: mode, since,
        reason, owner, customer_at, last_message, agent_at, version, as strings); `key` is
        the customer key. TTL=retention + RECORD_TTL_GRACE_SECONDS, like the records that
        name it, renewed by every write."""
        return f"{self.prefix}:chat:{key}"

    def chat_audit(self, key: str) -> str:
        """List of a conversation's audit entries (JSON {at, who, action}, newest last),
        trimmed to domain.conversation.AUDIT_KEPT; expires with the conversation's hash."""
        return f"{self.prefix}:chatlog:{key}"

    def chat_records(self, key: str) -> str:
        """Sorted set of the ids of the records naming conversation `key` (field 'c'), by
        creation time: its records, oldest first. Kept by the scripts that write records,
        left by purge; expires like the records, renewed by each one added."""
        return f"{self.prefix}:chatrec:{key}"

    def chat_mode(self, mode: str) -> str:
        """Sorted set of the keys of the conversations in `mode` now, by when they entered it
        (the longest waiting first). A mode change moves the key; members whose hash has
        expired are dropped when listed."""
        return f"{self.prefix}:chats:{mode}"

    @property
    def chats(self) -> str:
        """Sorted set of every conversation's key, by when it entered its mode."""
        return f"{self.prefix}:chats"

    def alias(self, ref: str) -> str:
        """The customer key (a keyed hash of their BSUID) that the keyed hash of their
        number, or of a BSUID they had before, stands for; TTL=retention, like the records
        that name both ids, renewed by every message that names both."""
        return f"{self.prefix}:alias:{ref}"

    @property
    def instances(self) -> str:
        """Sorted set of instance ids by their last heartbeat: an instance that stopped
        beating is dead, and the open records it owned are adopted by a live one."""
        return f"{self.prefix}:instances"

    @property
    def instances_adopted(self) -> str:
        """Hash of adoptions for the console: field `<instance id>` the records that instance
        adopted from dead ones, `<instance id>:at` when it last did; written by the adoption
        script itself, expires ADOPTED_TTL_SECONDS after the last adoption."""
        return f"{self.prefix}:instances:adopted"

    def lease(self, name: str) -> str:
        """Owner of a step's lease; expires after LEASE_SECONDS (or the given length)."""
        return f"{self.prefix}:lease:{name}"

    def pacing(self, ref: str) -> str:
        """Token bucket of one recipient's sends (ref: the customer key), so one
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
