"""End-to-end latency of one message through pyloto when the LLM takes 300 ms a call, and
the share of it that is orchestration rather than LLM.

    .venv/bin/python bench/latency.py [--messages 300] [--rate 5] [--llm-delay 0.3] [--smoke]

pyloto runs as `pyloto serve` does (bench/pyloto_server.py, the deploy guide's queue rates)
on a private Redis, against the fake OpenAI answering every call after --llm-delay and the
fake Graph answering at once. Messages are posted as signed webhooks at --rate a second,
after --warmup-messages that are not counted.

For each message: end to end = the Graph fake's arrival time of its reply (time.time() in
that process) minus the time its webhook POST was written (same clock). LLM time = the
three calls' `latency_ms` as the record stores them (GET /internal/messages/{id}), i.e.
measured around the SDK call, so the SDK's own overhead counts as LLM time. Orchestration
= end to end - LLM time: the webhook, the queue, Redis, leases, the read receipt, building
and sending the reply. The record's history splits it further: ingest (POST → record
created), between steps (one step's save → the next step's start: the enqueue, the
queue's dispatch, the lease and the load) and step time besides the LLM call. Prints
p50/p95/p99 of each and writes bench/results/latency.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    INTERNAL_TOKEN,
    Processes,
    RedisServer,
    http_json,
    machine,
    percentile,
    table,
    workspace,
    write_results,
)
from _services import (
    post,
    service_env,
    start_fakes,
    start_pyloto,
    wait_for_sends,
    webhook_requests,
)

LLM_STEPS = ("llm1", "llm2", "llm3")
GOAL_P99_MS = 15.0


def breakdown(record: dict[str, Any], posted: float, replied: float) -> dict[str, float]:
    """Where one message's time went, in ms."""
    results = record["results"]
    llm = sum(float(results[step]["latency_ms"]) for step in LLM_STEPS if step in results)
    end_to_end = (replied - posted) * 1000
    waits = steps = 0.0
    hops: dict[str, float] = {}
    previous_end = record["created_at"]
    for entry in record["history"]:
        start = entry["at"] - entry["duration_ms"] / 1000
        wait = max(0.0, start - previous_end) * 1000
        hops[f"wait before {entry['from']}"] = wait
        waits += wait
        steps += entry["duration_ms"]
        previous_end = entry["at"]
    return {
        "end_to_end": end_to_end,
        "llm": llm,
        "orchestration": end_to_end - llm,
        "ingest": (record["created_at"] - posted) * 1000,
        "between_steps": waits,
        "steps_besides_llm": steps - llm,
        "transitions": float(len(record["history"])),
        **hops,
    }


def summarize(rows: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """p50/p95/p99/max of every column."""
    return {
        key: {
            "p50": percentile([r[key] for r in rows], 50),
            "p95": percentile([r[key] for r in rows], 95),
            "p99": percentile([r[key] for r in rows], 99),
            "max": max(r[key] for r in rows),
        }
        for key in rows[0]
        if key != "transitions"
    }


def run(args: argparse.Namespace, source: str | None = None) -> dict[str, Any]:
    """Start everything, post at the rate, collect each message's record and timings
    (`source`: another checkout's src/ to run instead of this one's)."""
    with workspace("latency") as work, Processes(work) as procs:
        fakes = start_fakes(procs, llm_delay=args.llm_delay)
        redis = RedisServer(procs)
        env = service_env(redis.url, fakes)
        if source:
            env["PYTHONPATH"] = source
        service = start_pyloto(procs, env, "shipped", "pyloto")
        if args.warmup_messages:  # first connections, first calls: not in the figures
            warmup = webhook_requests(service.port, "W", args.warmup_messages)
            post(service.port, warmup, args.connections, rate=args.rate)
            wait_for_sends(fakes, set(warmup), 120 + args.warmup_messages / args.rate)
        requests = webhook_requests(service.port, "L", args.messages)
        posted = post(service.port, requests, args.connections, rate=args.rate)
        replied = wait_for_sends(fakes, set(requests), 120 + args.messages / args.rate)
        token = {"X-Internal-Token": INTERNAL_TOKEN}
        base = f"http://127.0.0.1:{service.port}/internal/messages"
        rows, unfinished = [], []
        for wamid in requests:
            record = http_json(f"{base}/{wamid}", headers=token)
            if record["state"] != "sent" or any(s not in record["results"] for s in LLM_STEPS):
                unfinished.append({"id": wamid, "state": record["state"]})
                continue
            rows.append(breakdown(record, posted[wamid], replied[wamid]))
        redis.close()
        return {"rows": rows, "not_through_llm": unfinished, "stats": service.stats()}


def main() -> None:
    """Measure and report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--rate", type=float, default=5.0, help="webhooks a second")
    parser.add_argument("--llm-delay", type=float, default=0.3, help="seconds per LLM call")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--warmup-messages", type=int, default=10, help="sent first, not counted")
    parser.add_argument("--smoke", action="store_true", help="10 messages (CI)")
    parser.add_argument(
        "--baseline", default=None, help="a checkout of earlier code: measured after, the same way"
    )
    args = parser.parse_args()
    if args.smoke:
        args.messages, args.warmup_messages = 10, 2
    print(
        f"latency: {args.messages} messages at {args.rate:g}/s, "
        f"LLM answering in {args.llm_delay * 1000:.0f} ms",
        flush=True,
    )
    facts = machine()
    measured = run(args)
    rows = measured["rows"]
    if not rows:
        raise SystemExit(f"no message went through the LLM steps: {measured['not_through_llm']}")
    summary = summarize(rows)
    print()
    print(
        table(
            ["ms", "p50", "p95", "p99", "max"],
            [[key, *values.values()] for key, values in summary.items()],
        )
    )
    nominal = 3 * args.llm_delay * 1000
    p99 = summary["orchestration"]["p99"]
    verdict = "met" if p99 <= GOAL_P99_MS else "MISSED"
    print(f"\norchestration p99 = {p99:.1f} ms (target ≤ {GOAL_P99_MS:g} ms: {verdict})")
    above = summary["end_to_end"]["p99"] - nominal
    print(f"end to end p99 - {nominal:.0f} ms of nominal LLM time = {above:.1f} ms")
    baseline: dict[str, Any] = {}
    if args.baseline:
        old = run(args, str(Path(args.baseline).resolve() / "src"))
        baseline = summarize(old["rows"]) if old["rows"] else {}
        if baseline:
            print(f"\nbaseline ({args.baseline}), measured the same way after it:")
            keys = ("end_to_end", "llm", "orchestration", "ingest", "between_steps")
            print(
                table(
                    ["ms", "p50", "p95", "p99", "max"],
                    [[key, *baseline[key].values()] for key in keys],
                )
            )
    if measured["not_through_llm"]:
        print(f"{len(measured['not_through_llm'])} messages did not go through the LLM steps")
    path = write_results(
        "latency" if not args.smoke else "latency-smoke",
        {
            "machine": facts,
            "settings": vars(args),
            "summary_ms": summary,
            "baseline_summary_ms": baseline,
            "orchestration_p99_ms": p99,
            "target_p99_ms": GOAL_P99_MS,
            "not_through_llm": measured["not_through_llm"],
            "queue": measured["stats"],
            "messages": rows,
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
