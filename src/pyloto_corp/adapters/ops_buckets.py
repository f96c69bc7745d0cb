"""The console's time buckets as both stores keep them: the widths that exist, how long each
is kept, and which buckets a read may still see (domain.ops_metrics names the counters)."""

from __future__ import annotations

from pyloto_corp.domain.ops_metrics import (
    DAY,
    DAY_BUCKETS_KEPT_SECONDS,
    HOUR,
    HOUR_BUCKETS_KEPT_SECONDS,
    MINUTE,
    MINUTE_BUCKETS_KEPT_SECONDS,
    bucket_of,
)

# Every width the transitions' counters are kept at, each written in the same write as the
# transition; the cost counters (tokens, billable messages) are kept per DAY only.
WIDTHS = (MINUTE, HOUR)
ALL_WIDTHS = (MINUTE, HOUR, DAY)
KEPT_SECONDS = {
    MINUTE: MINUTE_BUCKETS_KEPT_SECONDS,
    HOUR: HOUR_BUCKETS_KEPT_SECONDS,
    DAY: DAY_BUCKETS_KEPT_SECONDS,
}


def kept_seconds(width: int) -> int:
    """How long buckets of `width` are kept; ValueError for a width no store keeps."""
    try:
        return KEPT_SECONDS[width]
    except KeyError:
        raise ValueError(
            f"counters are kept per {MINUTE}, {HOUR} or {DAY} s, not {width}"
        ) from None


def first_kept(width: int, now: float) -> int:
    """The oldest bucket of `width` still kept at `now`: older ones are deleted (SQLite) or
    expired (Redis), and a read never returns them even while they linger."""
    return bucket_of(now - kept_seconds(width), width)


def first_read(width: int, since: float, now: float) -> int:
    """The first bucket a read of buckets since `since` returns at `now`."""
    return max(bucket_of(since, width), first_kept(width, now))
