"""The operations console's counters: what one transition adds to the time-bucketed
aggregates, and how the console reads percentiles back from them.

Each store keeps, per minute and per hour, a counter for every name below, incremented in
the same write that saves the transition (so the console never reads records to count):

- `t:{source}>{dest}`: transitions taken (`t:>received` counts records created);
- `d:{state}:{bin}`: how long the step run in `state` took, as a histogram bin;
- `e:{bin}`: time from `received` to `sent`, on the `sent` transition;
- `f:{reason}`: fallbacks by reason.

and, per UTC day only (what the line costs, domain.costs):

- `b:{category}`: billable messages sent, by Meta's pricing category, counted once per
  outbound message (the first status webhook that says it is billable);
- `k:{step}:in` / `k:{step}:out`: the input / output tokens of the LLM calls each step
  (media, llm1, llm2, llm3) made, added on the transition that saved the call.

Bins are logarithmic (each 25 % wider than the one before), so a percentile read back is
within that much of the true value whatever the scale, with a few dozen bins per step.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pyloto_corp.domain.records import Record

MINUTE = 60
HOUR = 3600
# How long each resolution is kept: the console shows the last hour by minute and the last
# day by hour; a little more is kept so a bucket is never read while it expires.
MINUTE_BUCKETS_KEPT_SECONDS = 2 * HOUR
HOUR_BUCKETS_KEPT_SECONDS = 50 * HOUR
# The cost counters are kept per UTC day for a little over a month: the console shows the
# last 31 days.
DAY = 24 * HOUR
DAY_BUCKETS_KEPT_SECONDS = 35 * DAY
# The steps that call an LLM: each names the state it leads to and the Results field its
# call's cost is kept in (domain.results.LLMCall).
LLM_STEPS = ("media", "llm1", "llm2", "llm3")
BILLABLE_PREFIX = "b:"
TOKENS_PREFIX = "k:"

BIN_RATIO = 1.25
_LOG_RATIO = math.log(BIN_RATIO)
# A name part is a state or a fallback reason: anything else is folded so that no counter
# name can carry free text (or a separator) into the aggregates.
_UNSAFE = re.compile(r"[^a-z0-9_]")

SENT_STATE = "sent"
FALLBACK_STATE = "fallback"


def _part(value: str) -> str:
    return _UNSAFE.sub("_", value.lower())[:48] or "unknown"


def duration_bin(ms: float) -> int:
    """The histogram bin of a duration: bin b holds (BIN_RATIO**(b-1), BIN_RATIO**b] ms,
    bin 0 everything up to 1 ms."""
    if ms <= 1.0:
        return 0
    return max(0, math.ceil(math.log(ms) / _LOG_RATIO - 1e-9))


def bin_upper_ms(b: int) -> float:
    """The upper bound of bin `b`, in milliseconds."""
    return BIN_RATIO**b


def created_counters() -> tuple[str, ...]:
    """What storing a new record adds."""
    return ("t:>received",)


def transition_counters(record: Record) -> tuple[str, ...]:
    """What saving `record` adds, from its last history entry (the transition just applied);
    nothing when the save applied none (a record saved without a new entry)."""
    if not record.history or record.history[-1].dest != record.state:
        return ()
    entry = record.history[-1]
    source, dest = _part(entry.source), _part(entry.dest)
    names = [f"t:{source}>{dest}", f"d:{source}:{duration_bin(entry.duration_ms)}"]
    if entry.dest == SENT_STATE:
        names.append(f"e:{duration_bin((entry.at - record.created_at) * 1000.0)}")
    if entry.dest == FALLBACK_STATE:
        names.append(f"f:{_part(record.fallback_reason or 'unknown')}")
    return tuple(names)


def pricing_category(category: str) -> str:
    """Meta's pricing category as the counters (and metrics) name it: folded to
    [a-z0-9_], so no free text reaches them."""
    return _part(category)


def billable_counter(category: str) -> str:
    """The day counter of one billable message of pricing `category`."""
    return f"{BILLABLE_PREFIX}{pricing_category(category)}"


def token_amounts(record: Record) -> tuple[tuple[str, int], ...]:
    """What saving `record` adds to its day's token counters: the tokens of the LLM call
    whose step the transition just applied (none for any other transition, or a call that
    counted none)."""
    if not record.history or record.history[-1].dest != record.state:
        return ()
    step, results = record.history[-1].dest, record.results
    calls = {"media": results.media, "llm1": results.llm1, "llm2": results.llm2}
    call = results.llm3 if step == "llm3" else calls.get(step)
    if call is None:
        return ()
    amounts = (
        (f"{TOKENS_PREFIX}{step}:in", int(call.input_tokens)),
        (f"{TOKENS_PREFIX}{step}:out", int(call.output_tokens)),
    )
    return tuple((name, n) for name, n in amounts if n > 0)


def bucket_of(at: float, width: int) -> int:
    """The bucket (its start, in seconds since the epoch) that time `at` falls in."""
    return int(at // width) * width


@dataclass(frozen=True)
class Percentiles:
    """p50/p95/p99 in milliseconds (upper bounds of their bins) over `count` samples."""

    count: int
    p50: float | None
    p95: float | None
    p99: float | None


def percentiles(histogram: Mapping[int, int]) -> Percentiles:
    """Percentiles of a histogram {bin: count}."""
    total = sum(histogram.values())
    if total <= 0:
        return Percentiles(0, None, None, None)
    ordered = sorted(histogram.items())

    def at(fraction: float) -> float:
        rank = max(1, math.ceil(fraction * total))
        seen = 0
        for b, n in ordered:
            seen += n
            if seen >= rank:
                return round(bin_upper_ms(b), 1)
        return round(bin_upper_ms(ordered[-1][0]), 1)

    return Percentiles(total, at(0.50), at(0.95), at(0.99))


def merge(buckets: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """The sum of several buckets' counters."""
    total: dict[str, int] = {}
    for bucket in buckets:
        for name, n in bucket.items():
            total[name] = total.get(name, 0) + n
    return total


def histogram(counters: Mapping[str, int], prefix: str) -> dict[int, int]:
    """The bins under `prefix` (`e:` or `d:{state}:`) of merged counters."""
    found: dict[int, int] = {}
    for name, n in counters.items():
        if name.startswith(prefix):
            tail = name[len(prefix) :]
            if tail.isdigit():
                found[int(tail)] = found.get(int(tail), 0) + n
    return found
