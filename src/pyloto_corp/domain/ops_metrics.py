"""The operations console's counters: what one transition adds to the time-bucketed
aggregates, and how the console reads percentiles back from them.

Each store keeps, per minute and per hour, a counter for every name below, incremented in
the same write that saves the transition (so the console never reads records to count):

- `t:{source}>{dest}`: transitions taken (`t:>received` counts records created);
- `d:{state}:{bin}`: how long the step run in `state` took, as a histogram bin;
- `e:{bin}`: time from `received` to `sent`, on the `sent` transition;
- `f:{reason}`: fallbacks by reason;
- `l:{step}:{model}:{outcome}`: the LLM calls each step (media, llm1, llm2, llm3) made, by
  the model asked for and their outcome (LLM_OUTCOMES), on the transition that saved the
  call: the step's own for a call answered, `fall_back` for one that failed;
- `c:{step}:{bin}`: how long those calls took, as a histogram bin, whatever their outcome;
- `r:{author}`: replies sent, by who made them (REPLY_AUTHORS), on the `sent` transition.

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

from pyloto_corp.domain.conversation import AGENT_REPLY_KIND, HANDOFF_REASON
from pyloto_corp.domain.records import Record
from pyloto_corp.domain.results import LLMCall

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
LLM_CALLS_PREFIX = "l:"
LLM_LATENCY_PREFIX = "c:"
REPLIES_PREFIX = "r:"
# What became of an LLM call, from the failure reason the record keeps of it: answered
# (`ok`), no answer in time (`timeout`), the model or the API's content policy refused
# (`refused`), an answer that is not the step's schema or breaks WhatsApp's limits, or no
# words in a voice note (`invalid`), anything else the API said (`error`: HTTP errors, 429,
# no connection).
LLM_OUTCOMES = ("ok", "timeout", "refused", "invalid", "error")
_OUTCOME_OF = {
    "timeout": "timeout",
    "refusal": "refused",
    "invalid_output": "invalid",
    "unparsable": "invalid",
    "empty_transcript": "invalid",
}
# Who made a reply sent: LLM#3 (`llm`), a template (`template`: the fallback, or the
# re-engagement template outside the 24-hour window), the acknowledgment of a handoff
# (`handoff`), an agent writing in pyloto (`agent`).
REPLY_AUTHORS = ("llm", "template", "handoff", "agent")
# A model name in a counter: folded like any part, and short (providers' names are, and a
# name past this is cut rather than let grow the aggregates).
MODEL_PART_CHARS = 40
# The trigger of a step that gave up: the failed call it saved is counted on it (never on a
# replay's move to `fallback`, which carries the same results).
_FALL_BACK = "fall_back"

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
    names += _llm_counters(record)
    if entry.dest == SENT_STATE:
        names.append(f"{REPLIES_PREFIX}{reply_author(record)}")
    return tuple(names)


def model_part(model: str) -> str:
    """A model's name as a counter part: [a-z0-9_], at most MODEL_PART_CHARS long."""
    return _part(model)[:MODEL_PART_CHARS]


def llm_outcome(call: LLMCall) -> str:
    """The call's outcome, one of LLM_OUTCOMES."""
    if not call.failure:
        return "ok"
    return _OUTCOME_OF.get(call.failure, "error")


def _saved_call(record: Record) -> tuple[str, LLMCall] | None:
    """The LLM call the transition just applied saved, with its step: the step's own
    result on the move to its state, the failed call on a fallback."""
    entry, results = record.history[-1], record.results
    if entry.dest == FALLBACK_STATE:
        call = results.failed_call if entry.trigger == _FALL_BACK else None
        return (results.fallback_step or "unknown", call) if call is not None else None
    calls = {"media": results.media, "llm1": results.llm1, "llm2": results.llm2}
    found = results.llm3 if entry.dest == "llm3" else calls.get(entry.dest)
    return (entry.dest, found) if found is not None else None


def _llm_counters(record: Record) -> list[str]:
    saved = _saved_call(record)
    if saved is None:
        return []
    step, call = _part(saved[0]), saved[1]
    model = model_part(call.requested_model or call.model or "unknown")
    return [
        f"{LLM_CALLS_PREFIX}{step}:{model}:{llm_outcome(call)}",
        f"{LLM_LATENCY_PREFIX}{step}:{duration_bin(call.latency_ms)}",
    ]


def reply_author(record: Record) -> str:
    """Who made the reply `record` sent, one of REPLY_AUTHORS."""
    if record.inbound.kind == AGENT_REPLY_KIND:
        return "agent"
    if record.fallback_reason == HANDOFF_REASON:
        return "handoff"
    if record.fallback_reason is not None or record.results.template is not None:
        return "template"
    return "llm"


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


@dataclass(frozen=True)
class LLMCalls:
    """The calls one LLM step made to one model in a window, by outcome."""

    step: str
    model: str
    outcomes: dict[str, int]  # every outcome of LLM_OUTCOMES, 0 when none

    @property
    def total(self) -> int:
        """Calls made."""
        return sum(self.outcomes.values())

    def rate(self, outcome: str) -> float | None:
        """The share of the calls that ended in `outcome` (None without calls)."""
        total = self.total
        return self.outcomes.get(outcome, 0) / total if total else None


def llm_calls(counters: Mapping[str, int]) -> list[LLMCalls]:
    """The `l:` counters of merged counters, one entry per step and model, in the
    pipeline's order (media, llm1, llm2, llm3, then any other step), then by model."""
    found: dict[tuple[str, str], dict[str, int]] = {}
    for name, n in counters.items():
        if not name.startswith(LLM_CALLS_PREFIX):
            continue
        parts = name[len(LLM_CALLS_PREFIX) :].split(":")
        if len(parts) != 3 or parts[2] not in LLM_OUTCOMES:
            continue
        outcomes = found.setdefault((parts[0], parts[1]), dict.fromkeys(LLM_OUTCOMES, 0))
        outcomes[parts[2]] += n
    order = {step: i for i, step in enumerate(LLM_STEPS)}
    keys = sorted(found, key=lambda key: (order.get(key[0], len(order)), key))
    return [LLMCalls(step, model, found[(step, model)]) for step, model in keys]


def replies_by_author(counters: Mapping[str, int]) -> dict[str, int]:
    """Replies sent by who made them: every author of REPLY_AUTHORS, 0 when none."""
    return {author: int(counters.get(f"{REPLIES_PREFIX}{author}", 0)) for author in REPLY_AUTHORS}
