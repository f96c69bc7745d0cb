"""The two task queues and their limits (from the deploy guide), in one place."""

from __future__ import annotations

from dataclasses import dataclass

from pyloto_corp.domain.statechart import QueueName


@dataclass(frozen=True)
class QueueSpec:
    """Dispatch rate, concurrency and retry policy of one queue."""

    name: QueueName
    rate_per_second: float
    max_concurrent: int
    max_attempts: int
    min_backoff_seconds: float = 5.0
    max_backoff_seconds: float = 600.0

    def backoff(self, attempt: int) -> float:
        """Delay before attempt `attempt + 1`: doubling from the minimum, capped."""
        return float(min(self.max_backoff_seconds, self.min_backoff_seconds * 2 ** (attempt - 1)))


# LLM steps: wide, the LLM is the slow part.
INBOUND = QueueSpec("inbound", rate_per_second=50, max_concurrent=50, max_attempts=10)
# Sends: narrow, to stay under Meta's throughput and pair-rate limits.
OUTBOUND = QueueSpec("outbound", rate_per_second=10, max_concurrent=10, max_attempts=8)

# The sweeper re-queues records untouched this long (above the longest retry backoff)...
STUCK_AFTER_SECONDS = 900.0
# ...checking this often while the service runs (and once at start-up).
SWEEP_INTERVAL_SECONDS = 300.0

# On a store shared by instances with in-process queues (Redis, local queue) each instance
# beats this often; one silent for DEAD_AFTER_SECONDS is dead, and the open records it owned
# (their tasks died with it) are adopted by a live one: within about 20 s of a crash.
BEAT_INTERVAL_SECONDS = 5.0
DEAD_AFTER_SECONDS = 15.0

# A step holds a lease on (record, state) this long at most: above the slowest step (an LLM
# call of OPENAI_TIMEOUT_SECONDS with a retry, or a Graph API send) so two deliveries of one
# task never overlap, short enough that a crashed holder delays the retry only briefly.
STEP_LEASE_SECONDS = 60.0
