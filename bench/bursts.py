"""Bursts: customers who write three short messages seconds apart ("oi" / "quero saber o
preço" / "do corte masculino"), with burst coalescing off and on, in one run.

    .venv/bin/python bench/bursts.py [--customers 100] [--singles 50] [--rounds 3] [--smoke]

Each variant runs bench/pyloto_server.py (`pyloto serve` with a counting local queue) on a
private in-memory Redis, with the LLM on, against the fake OpenAI answering each call after
--llm-delay (0.8-1.5 s, drawn per call, seeded) and the fake Graph after --graph-delay
(0.1-0.2 s). Variants differ by their environment only:

  coalescing-off  BURST_QUIET_SECONDS=0
  coalescing-on   BURST_QUIET_SECONDS=2.5 BURST_MAX_WAIT_SECONDS=12

(on code without those settings both behave alike). The variants run interleaved, each in
fresh processes, --rounds times; each figure printed is the median over the rounds. The
server gets one core and everything else (Redis, the fakes, this load generator) the other.

The load, from a seeded plan that is the same for both variants of a round: --customers
distinct customers (phone numbers and BSUIDs) start within --stagger seconds of each other,
each posting its three texts as signed webhooks with gaps drawn from --gap (0.5-2 s). Once
every reply has arrived (every customer answered after its last message, then no request to
either fake for a while), --singles other customers post one message each, staggered alike.

Per variant: replies per burst (sends reaching the Graph fake per customer, mean and max);
billed messages per burst (every service message sent is billed since 2026-10-01, see
shared WHATSAPP.md: the same count as the replies, unless a reply is split); LLM calls per
burst (the OpenAI fake's count over the bursts); the time from a burst's last webhook POST to
its last reply reaching the Graph fake (both time.time() on this machine), p50 and p99; how
many bursts were answered from all three texts (the LLM#2 prompt of the burst's last reply
holds each of them in a customer turn: the OpenAI fake numbers its drafts, LLM#3's answer
and so the send carry the number); and for the single messages, the time from the POST to
the reply, p50 and p99. Writes bench/results/bursts.json.

The queue's dispatch rates are lifted by default (--queue-rates unthrottled; concurrency,
attempts and backoff as shipped): at this load the deploy guide's 50 inbound tasks a second
would make the figures the queue's backlog rather than the bursts'.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen
from _common import (
    CLIENT_CPU,
    SERVER_CPU,
    TEXTS,
    Processes,
    RedisServer,
    bsuid_of,
    machine,
    percentile,
    pin_self,
    sender_of,
    sign,
    table,
    webhook_body,
    workspace,
    write_results,
)
from _services import Delay, Fakes, Service, service_env, start_fakes, start_pyloto

VARIANTS: dict[str, dict[str, str]] = {
    "coalescing-off": {"BURST_QUIET_SECONDS": "0"},
    "coalescing-on": {"BURST_QUIET_SECONDS": "2.5", "BURST_MAX_WAIT_SECONDS": "12"},
}
# Three short messages a customer sends one after the other, in Portuguese; none is a
# substring of the fakes' canned answers, so a prompt holding one was sent it.
SCRIPTS = (
    ("oi", "quero saber o preço", "do corte masculino"),
    ("bom dia", "vocês abrem no sábado?", "e até que horas?"),
    ("olá, tudo bem?", "queria marcar um horário", "pra amanhã à tarde"),
    ("boa tarde", "quanto fica a barba", "junto com o corte sai mais barato?"),
)
# sender_of keeps 1000 distinct numbers.
MAX_CUSTOMERS = 1000


@dataclass(frozen=True)
class Customer:
    """One customer of the plan: when its messages are posted, after the phase's start."""

    index: int
    texts: tuple[str, ...]
    at: tuple[float, ...]  # seconds after the phase's start, one per text

    def wamid(self, tag: str, n: int) -> str:
        """The id of its n-th message."""
        return f"wamid.BURST{tag}{self.index:04d}{n}"


def plan(
    first: int, count: int, scripts: Sequence[tuple[str, ...]], args: argparse.Namespace, seed: int
) -> list[Customer]:
    """`count` customers from index `first`, starting within --stagger seconds, each with a
    script and gaps drawn from --gap (seeded)."""
    rng = random.Random(seed)
    low, high = args.gap
    customers = []
    for index in range(first, first + count):
        texts = scripts[rng.randrange(len(scripts))]
        at = [rng.uniform(0, args.stagger)]
        for _ in texts[1:]:
            at.append(at[-1] + rng.uniform(low, high))
        customers.append(Customer(index, tuple(texts), tuple(at)))
    return customers


async def post_one(port: int, data: bytes) -> tuple[float, int]:
    """One webhook POST on a connection of its own: (time.time() when written, status)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        at = time.time()
        writer.write(data)
        status, _ = await loadgen.read_response(reader)
    finally:
        writer.close()
    return at, status


async def post_plan(port: int, customers: Sequence[Customer], tag: str) -> dict[str, float]:
    """Post every customer's messages at their planned times; wamid → time.time() of its
    POST. Raises on a refused webhook."""
    posted: dict[str, float] = {}
    start = time.monotonic()

    async def one(customer: Customer) -> None:
        for n, (text, at) in enumerate(zip(customer.texts, customer.at, strict=True)):
            await asyncio.sleep(max(0.0, start + at - time.monotonic()))
            wamid = customer.wamid(tag, n)
            body = webhook_body(wamid, customer.index, timestamp=int(time.time()), text=text)
            sent, status = await post_one(port, loadgen.request_bytes(port, body, sign(body)))
            if status != 200:
                raise RuntimeError(f"webhook refused: HTTP {status}")
            posted[wamid] = sent

    await asyncio.gather(*(one(c) for c in customers))
    return posted


@dataclass
class Phase:
    """What one phase (the bursts, or the single messages) left at the fakes."""

    customers: list[Customer]
    tag: str
    posted: dict[str, float]
    sends: dict[int, list[tuple[float, int | None]]]  # customer → (arrival, draft number)
    llm_calls: dict[str, int]
    drafts: list[list[dict[str, Any]]]


def whose(customers: Iterable[Customer], tag: str) -> dict[str, int]:
    """Recipient or inbound wamid → customer index, to tell sends apart."""
    names: dict[str, int] = {}
    for customer in customers:
        names[sender_of(customer.index)] = customer.index
        names[bsuid_of(customer.index)] = customer.index
        for n in range(len(customer.texts)):
            names[customer.wamid(tag, n)] = customer.index
    return names


def sends_by_customer(
    fakes: Fakes, names: dict[str, int]
) -> dict[int, list[tuple[float, int | None]]]:
    """The Graph fake's sends, by customer (by the wamid replied to, else the recipient)."""
    found: dict[int, list[tuple[float, int | None]]] = {}
    for to, replied_to, arrived, draft in fakes.send_log():
        index = names.get(replied_to, names.get(to))
        if index is not None:
            found.setdefault(index, []).append((arrived, draft))
    for sends in found.values():
        sends.sort()
    return found


def settle(
    fakes: Fakes,
    customers: Sequence[Customer],
    tag: str,
    posted: dict[str, float],
    quiet: float,
    timeout: float,
) -> dict[int, list[tuple[float, int | None]]]:
    """Wait until every customer got a send after its last message and neither fake has
    had a request for `quiet` seconds; the sends by customer."""
    names = whose(customers, tag)
    last = {c.index: posted[c.wamid(tag, len(c.texts) - 1)] for c in customers}
    deadline = time.monotonic() + timeout
    seen: tuple[int, int] = (-1, -1)
    changed = time.monotonic()
    while True:
        stats = fakes.stats()
        counts = (int(stats["graph"]["requests"]), int(stats["openai"]["requests"]))
        if counts != seen:
            seen, changed = counts, time.monotonic()
        sends = sends_by_customer(fakes, names)
        waiting = [i for i in last if not any(at >= last[i] for at, _ in sends.get(i, []))]
        if not waiting and time.monotonic() - changed >= quiet:
            return sends
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{len(waiting)} of {len(last)} customers got no reply after their last "
                f"message within {timeout:.0f} s"
            )
        time.sleep(0.25)


def run_phase(
    service: Service,
    fakes: Fakes,
    customers: list[Customer],
    tag: str,
    args: argparse.Namespace,
) -> Phase:
    """Post a plan and wait for its replies; what the fakes saw of it."""
    fakes.reset()
    posted = loadgen.run(post_plan(service.port, customers, tag))
    assert isinstance(posted, dict)
    # Past every customer's reply only earlier messages' pipelines may still run: their
    # requests to the fakes come at most an LLM call (and a Graph call) apart.
    quiet = args.llm_delay[1] + args.graph_delay[1] + 1.0
    timeout = 120 + 3 * args.gap[1] + float(VARIANTS["coalescing-on"]["BURST_MAX_WAIT_SECONDS"])
    sends = settle(fakes, customers, tag, posted, quiet, timeout)
    llm_calls = dict(fakes.stats()["openai"]["by_kind"])
    return Phase(customers, tag, posted, sends, llm_calls, fakes.drafts())


def customer_turns(messages: list[dict[str, Any]]) -> str:
    """The customer's side of an LLM#2 prompt."""
    return "\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "user")


def holds(prompt: str, text: str) -> bool:
    """Whether `text` stands in `prompt` as a whole ("oi" is not in "dois")."""
    return re.search(rf"(?<!\w){re.escape(text)}(?!\w)", prompt) is not None


def burst_figures(phase: Phase) -> dict[str, Any]:
    """Replies, billed messages, LLM calls, latency and prompts of the bursts."""
    count = len(phase.customers)
    each = []
    for customer in phase.customers:
        sends = phase.sends.get(customer.index, [])
        last_post = phase.posted[customer.wamid(phase.tag, len(customer.texts) - 1)]
        seen = None  # how many of its texts the last reply's LLM#2 prompt holds
        if sends and sends[-1][1] is not None and sends[-1][1] < len(phase.drafts):
            prompt = customer_turns(phase.drafts[sends[-1][1]])
            seen = sum(holds(prompt, text) for text in customer.texts)
        each.append(
            {
                "replies": len(sends),
                "last_message_to_reply_ms": (sends[-1][0] - last_post) * 1000 if sends else None,
                "texts_in_last_llm2_prompt": seen,
            }
        )
    replies = [b["replies"] for b in each]
    latencies = [b["last_message_to_reply_ms"] for b in each if b["replies"]]
    calls = sum(phase.llm_calls.values())
    return {
        "bursts": count,
        "replies_per_burst_mean": sum(replies) / count,
        "replies_per_burst_max": max(replies),
        "billed_per_burst": sum(replies) / count,
        "llm_calls_per_burst": calls / count,
        "llm_calls_by_kind": phase.llm_calls,
        "last_message_to_reply_ms_p50": percentile(latencies, 50),
        "last_message_to_reply_ms_p99": percentile(latencies, 99),
        "bursts_answered_from_all_texts": sum(
            b["texts_in_last_llm2_prompt"] == len(c.texts)
            for b, c in zip(each, phase.customers, strict=True)
        ),
        "each_burst": each,
    }


def single_figures(phase: Phase) -> dict[str, Any]:
    """Latency of the single messages: POST → the first reply."""
    latencies = []
    for customer in phase.customers:
        sends = phase.sends.get(customer.index, [])
        if sends:
            latencies.append((sends[0][0] - phase.posted[customer.wamid(phase.tag, 0)]) * 1000)
    return {
        "singles": len(phase.customers),
        "single_replies": sum(len(phase.sends.get(c.index, [])) for c in phase.customers),
        "single_to_reply_ms_p50": percentile(latencies, 50),
        "single_to_reply_ms_p99": percentile(latencies, 99),
    }


def states_of(redis: RedisServer, phases: Sequence[Phase]) -> dict[str, int]:
    """How the run's message records ended (state → count)."""
    states: Counter[str] = Counter()
    for phase in phases:
        for wamid in phase.posted:
            states[str(redis.command("HGET", f"pyloto:rec:{wamid}", "s"))] += 1
    return dict(states)


def run_variant(variant: str, number: int, args: argparse.Namespace) -> dict[str, Any]:
    """One variant in fresh processes: the bursts, then the single messages."""
    seed = args.seed + number
    bursts = plan(0, args.customers, SCRIPTS, args, seed)
    singles = plan(args.customers, args.singles, [(t,) for t in TEXTS], args, seed + 10_000)
    with workspace(f"bursts-{variant}") as work, Processes(work) as procs:
        fakes = start_fakes(
            procs,
            Delay(*args.llm_delay),
            graph_delay=Delay(*args.graph_delay),
            record=True,
            seed=seed,
            cpu=CLIENT_CPU,
        )
        redis = RedisServer(procs, cpu=CLIENT_CPU)
        env = {**service_env(redis.url, fakes), **VARIANTS[variant]}
        service = start_pyloto(procs, env, args.queue_rates, variant, cpu=SERVER_CPU)
        burst_phase = run_phase(service, fakes, bursts, "B", args)
        single_phase = run_phase(service, fakes, singles, "S", args)
        result = burst_figures(burst_phase) | single_figures(single_phase)
        result["record_states"] = states_of(redis, (burst_phase, single_phase))
        result["queue"] = service.stats()
        redis.close()
    return result


COLUMNS = {
    "bursts": "bursts",
    "replies_per_burst_mean": "replies/burst",
    "replies_per_burst_max": "max",
    "billed_per_burst": "billed/burst",
    "llm_calls_per_burst": "LLM calls/burst",
    "last_message_to_reply_ms_p50": "last msg→reply p50 ms",
    "last_message_to_reply_ms_p99": "p99 ms",
    "bursts_answered_from_all_texts": "LLM#2 saw all 3",
    "single_to_reply_ms_p50": "single→reply p50 ms",
    "single_to_reply_ms_p99": "p99 ms ",
}


def medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the rounds (the rounds' own figures beside them)."""
    result: dict[str, Any] = {key: statistics.median(r[key] for r in rounds) for key in COLUMNS}
    result["rounds"] = rounds
    return result


def report(results: dict[str, dict[str, Any]]) -> str:
    """The table of medians."""
    rows = [[name, *(r[key] for key in COLUMNS)] for name, r in results.items()]
    return table(["variant", *COLUMNS.values()], rows)


def main() -> None:
    """Run the variants interleaved, --rounds times, and report the medians."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=100, help="customers sending a burst")
    parser.add_argument("--singles", type=int, default=50, help="customers sending one message")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stagger", type=float, default=5.0, help="seconds the starts spread")
    parser.add_argument("--gap", type=float, nargs=2, default=(0.5, 2.0), metavar=("MIN", "MAX"))
    parser.add_argument(
        "--llm-delay", type=float, nargs=2, default=(0.8, 1.5), metavar=("MIN", "MAX")
    )
    parser.add_argument(
        "--graph-delay", type=float, nargs=2, default=(0.1, 0.2), metavar=("MIN", "MAX")
    )
    parser.add_argument("--queue-rates", choices=["shipped", "unthrottled"], default="unthrottled")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="3 customers, 1 round (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.customers, args.singles, args.rounds, args.stagger = 3, 2, 1, 1.0
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    if args.customers < 1 or args.singles < 0 or args.customers + args.singles > MAX_CUSTOMERS:
        parser.error(f"--customers (≥ 1) and --singles together: at most {MAX_CUSTOMERS}")
    pin_self(CLIENT_CPU)
    print(
        f"bursts: {args.customers} customers x 3 messages, {args.singles} single messages, "
        f"LLM {args.llm_delay[0]:g}-{args.llm_delay[1]:g} s, Graph "
        f"{args.graph_delay[0]:g}-{args.graph_delay[1]:g} s, queue rates {args.queue_rates}, "
        f"{args.rounds} round(s)",
        flush=True,
    )
    facts = machine()
    rounds: dict[str, list[dict[str, Any]]] = {variant: [] for variant in variants}
    for number in range(1, args.rounds + 1):
        for variant in variants:  # interleaved, so a slower spell of the machine hits both
            print(f"  round {number}: {variant} …", flush=True)
            rounds[variant].append(run_variant(variant, number, args))
    results = {variant: medians(found) for variant, found in rounds.items()}
    print()
    print(report(results))
    print("\n(medians over the rounds; ms from the webhook POST to the reply at the Graph fake)")
    for variant, result in results.items():
        states = result["rounds"][-1]["record_states"]
        print(f"{variant}: records of the last round by state: {json.dumps(states)}")
    path = write_results(
        "bursts" if not args.smoke else "bursts-smoke",
        {"machine": facts, "settings": vars(args), "variants": VARIANTS, "results": results},
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
