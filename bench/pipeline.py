"""The whole pipeline: N messages through every state, pyloto next to the same three
steps as chained arq jobs, against fake OpenAI and Graph servers that answer at once.

    .venv/bin/python bench/pipeline.py [--messages 5000] [--variants ...] [--profile] [--smoke]

Variants (each with its own private redis-server, in-memory; the fakes are shared):
  pyloto              bench/pyloto_server.py = `pyloto serve` on Redis with the local queue
                      at the deploy guide's rates (inbound 50/s, outbound 10/s, so at most
                      10 messages/s: it gets --shipped-messages, 1000 by default)
  pyloto-unthrottled  the same with the dispatch rates lifted: what the orchestration can do
  arq                 bench/arq_app.py: a Litestar webhook + an arq worker (llm1 → llm2 →
                      llm3 + send), same Redis, fakes, SDKs and prompts

The load is posted as signed webhooks (8 keep-alive connections, as fast as accepted);
completion is the reply of every message arriving at the Graph fake. Reported per variant:
messages/s and transitions/s (first POST to last reply), CPU seconds of the service
processes per message (psutil, before/after), Redis commands per message (INFO
commandstats, which counts commands run inside scripts too), Redis round trips per message
(MONITOR over a separate sample of --monitor-messages), queue tasks per message, peak RSS.
Prints a table and writes bench/results/pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _profile
from _common import (
    RESULTS,
    Processes,
    ProcessMeter,
    RedisServer,
    machine,
    table,
    workspace,
    write_results,
)
from _monitor import Monitor
from _services import (
    Fakes,
    Service,
    post,
    service_env,
    start_arq,
    start_fakes,
    start_pyloto,
    wait_for_sends,
    webhook_requests,
)

VARIANTS = ("pyloto", "pyloto-unthrottled", "arq")
# --baseline DIR adds pyloto-unthrottled on the code in DIR/src (an earlier checkout), in
# the same run.
BASELINE = "baseline-unthrottled"
_baseline_src: list[str] = []
PYLOTO_TRANSITIONS = 7  # received → deduped → llm1 → llm2 → llm3 → queued_outbound → sending → sent
ARQ_JOBS = 3
GOALS = {
    "pyloto CPU ms/message": 4.0,
    "pyloto-unthrottled CPU ms/message": 4.0,
    "pyloto-unthrottled msg/s ÷ arq msg/s": 2.0,
    "pyloto round trips/transition": 2.0,
}


def start_service(
    procs: Processes, variant: str, redis: RedisServer, fakes: Fakes
) -> tuple[Service, Path]:
    """The variant's processes; the file the arq worker writes its counts to."""
    env = service_env(redis.url, fakes)
    stats_file = procs.workdir / f"{variant}-worker.json"
    if variant == "arq":
        return start_arq(procs, env, stats_file), stats_file
    rates = "unthrottled" if variant in ("pyloto-unthrottled", BASELINE) else "shipped"
    if variant == BASELINE:
        env = {**env, "PYTHONPATH": _baseline_src[0]}
    return start_pyloto(procs, env, rates, variant), stats_file


def messages_for(variant: str, args: argparse.Namespace) -> int:
    """--messages; the shipped queue rates take --shipped-messages at most (10 a second)."""
    return min(args.messages, args.shipped_messages) if variant == "pyloto" else args.messages


def timeout_for(variant: str, messages: int) -> float:
    """Generous: the shipped queue sends 10 replies a second at most."""
    return 120 + messages / (5 if variant == "pyloto" else 50)


def measure(
    variant: str, service: Service, redis: RedisServer, fakes: Fakes, args: argparse.Namespace
) -> dict[str, Any]:
    """Post the messages, wait for every reply; throughput, CPU, Redis commands, memory."""
    messages = messages_for(variant, args)
    requests = webhook_requests(service.port, variant.replace("-", "")[:8], messages)
    fakes.reset()
    meter = ProcessMeter({**service.pids, "redis": redis.process.pid, **fakes.pids})
    before = service.stats()
    redis.command("CONFIG", "RESETSTAT")
    meter.start()
    posted = post(service.port, requests, args.connections)
    replied = wait_for_sends(fakes, set(requests), timeout_for(variant, messages))
    usage = meter.stop()
    commands = redis.commandstats()
    after = service.stats()
    elapsed = max(replied.values()) - min(posted.values())
    service_cpu = sum(usage[name]["cpu_seconds"] for name in service.pids)
    return {
        "messages": messages,
        "seconds": elapsed,
        "messages_per_second": messages / elapsed,
        "posting_seconds": max(posted.values()) - min(posted.values()),
        "service_cpu_seconds": service_cpu,
        "service_cpu_ms_per_message": service_cpu * 1000 / messages,
        "service_processes": list(service.pids),
        "processes": usage,
        "redis_commands": commands,
        "redis_commands_per_message": sum(commands.values()) / messages,
        "service_counts": {"before": before, "after": after},
        "fakes": fakes.stats(),
        "posted": posted,
    }


def round_trips(
    variant: str, service: Service, redis: RedisServer, fakes: Fakes, args: argparse.Namespace
) -> dict[str, Any]:
    """Redis round trips per message over a MONITOR sample of fresh messages."""
    count = args.monitor_messages
    tag = "M" + variant.replace("-", "")[:7]
    requests = webhook_requests(service.port, tag, count, first=10_000_000)
    monitor = Monitor(redis.port, ignore_ports={redis.client_port()})
    try:
        post(service.port, requests, args.connections)
        wait_for_sends(fakes, set(requests), timeout_for(variant, count))
        time.sleep(0.5)  # the send step's last writes land just after the reply
    finally:
        seen = monitor.stop()
    seen["messages"] = count
    seen["round_trips_per_message"] = seen["round_trips"] / count
    return seen


def transitions_of(redis: RedisServer, wamids: list[str]) -> dict[str, Any]:
    """States and history lengths of pyloto's records (read after the measurement)."""
    states: dict[str, int] = {}
    transitions = 0
    for wamid in wamids:
        state, data = redis.command("HMGET", f"pyloto:rec:{wamid}", "s", "d")
        states[state] = states.get(state, 0) + 1
        transitions += len(json.loads(data)["history"]) if data else 0
    return {"states": states, "transitions": transitions}


def tasks_of(
    variant: str, result: dict[str, Any], stats_file: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Queue tasks per message: pyloto's counted around the measurement; arq's worker
    counts its whole life, the MONITOR sample's messages included."""
    counts = result["service_counts"]
    if variant == "arq":
        worker = json.loads(stats_file.read_text()) if stats_file.is_file() else {}
        jobs = worker.get("jobs_complete", 0) + worker.get("jobs_failed", 0)
        messages = result["messages"] + args.monitor_messages
        return {"tasks": jobs, "messages": messages, "worker": worker, "web": counts["after"]}
    delivered = counts["after"]["delivered"]
    earlier = counts["before"]["delivered"]
    by_state = {state: n - earlier.get(state, 0) for state, n in delivered.items()}
    return {"tasks": sum(by_state.values()), "messages": result["messages"], "by_state": by_state}


def run_variant(variant: str, fakes: Fakes, procs: Processes, args: argparse.Namespace) -> dict:
    """One variant from start to stop."""
    print(f"  {variant} …", flush=True)
    redis = RedisServer(procs, name=f"redis-{variant}")
    service, stats_file = start_service(procs, variant, redis, fakes)
    try:
        result = measure(variant, service, redis, fakes, args)
        result["round_trips"] = round_trips(variant, service, redis, fakes, args)
        if args.profile and variant == "pyloto-unthrottled":
            result["profile"] = profile(variant, service, fakes, procs, args)
    finally:
        for process in reversed(service.processes.values()):
            procs.stop(process)
    posted = list(result.pop("posted"))
    if variant == "arq":
        result["transitions"] = ARQ_JOBS * len(posted)
    else:
        result["records"] = transitions_of(redis, posted)
        result["transitions"] = result["records"]["transitions"]
    result["transitions_per_second"] = result["transitions"] / result["seconds"]
    result["queue"] = tasks_of(variant, result, stats_file, args)
    result["queue"]["tasks_per_message"] = result["queue"]["tasks"] / result["queue"]["messages"]
    per_transition = result["transitions"] / result["messages"]
    result["round_trips"]["round_trips_per_transition"] = (
        result["round_trips"]["round_trips_per_message"] / per_transition
    )
    redis.close()
    procs.stop(redis.process)
    return result


def profile(
    variant: str, service: Service, fakes: Fakes, procs: Processes, args: argparse.Namespace
) -> dict[str, Any]:
    """py-spy on pyloto while it processes another batch (not the measured one)."""
    pid = next(iter(service.pids.values()))
    raw = procs.workdir / f"{variant}.pyspy.txt"
    requests = webhook_requests(service.port, "P", args.profile_messages, first=20_000_000)
    spy = _profile.record(procs, "py-spy", pid, None, raw)
    try:
        post(service.port, requests, args.connections)
        wait_for_sends(fakes, set(requests), 2 * timeout_for(variant, args.profile_messages))
    finally:
        _profile.finish(procs, spy)
    summary = _profile.summarize(raw)
    if raw.is_file():
        RESULTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(raw, RESULTS / f"pipeline-{variant}.pyspy.txt")
        summary["raw"] = str(RESULTS / f"pipeline-{variant}.pyspy.txt")
    return summary


def report(results: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """The table and the figures against the issue's targets."""
    rows = []
    for name, r in results.items():
        service_rss = max(r["processes"][p]["peak_rss_mib"] for p in r["service_processes"])
        usage = r["processes"]
        service_cores = sum(usage[p]["core_utilisation"] for p in r["service_processes"])
        fakes_cores = sum(v["core_utilisation"] for k, v in usage.items() if k.startswith("fake"))
        rows.append(
            [
                name,
                r["messages"],
                r["messages_per_second"],
                r["transitions_per_second"],
                r["service_cpu_ms_per_message"],
                r["redis_commands_per_message"],
                r["round_trips"]["round_trips_per_message"],
                r["round_trips"]["round_trips_per_transition"],
                r["queue"]["tasks_per_message"],
                service_rss,
                f"{service_cores * 100:.0f} %",
                f"{usage['redis']['core_utilisation'] * 100:.0f} %",
                f"{fakes_cores * 100:.0f} %",
            ]
        )
    text = table(
        [
            "variant",
            "messages",
            "msg/s",
            "transitions/s",
            "CPU ms/msg",
            "redis cmds/msg",
            "round trips/msg",
            "round trips/transition",
            "tasks/msg",
            "peak RSS MiB",
            "service cores",
            "redis core",
            "fakes cores",
        ],
        rows,
    )
    figures: dict[str, Any] = {}
    if "pyloto" in results:
        figures["pyloto CPU ms/message"] = results["pyloto"]["service_cpu_ms_per_message"]
        figures["pyloto round trips/transition"] = results["pyloto"]["round_trips"][
            "round_trips_per_transition"
        ]
    if "pyloto-unthrottled" in results:
        figures["pyloto-unthrottled CPU ms/message"] = results["pyloto-unthrottled"][
            "service_cpu_ms_per_message"
        ]
    if "pyloto-unthrottled" in results and BASELINE in results:
        figures["pyloto-unthrottled msg/s ÷ baseline msg/s"] = (
            results["pyloto-unthrottled"]["messages_per_second"]
            / results[BASELINE]["messages_per_second"]
        )
    if "pyloto-unthrottled" in results and "arq" in results:
        figures["pyloto-unthrottled msg/s ÷ arq msg/s"] = (
            results["pyloto-unthrottled"]["messages_per_second"]
            / results["arq"]["messages_per_second"]
        )
    lines = []
    for key, value in figures.items():
        if key not in GOALS:
            lines.append(f"{key} = {value:.2f}")
            continue
        goal = GOALS[key]
        at_most = not key.endswith("arq msg/s")
        met = value <= goal if at_most else value >= goal
        sign = "≤" if at_most else "≥"
        lines.append(f"{key} = {value:.2f} (target {sign} {goal:g}: {'met' if met else 'MISSED'})")
    return text + "\n\n" + "\n".join(lines), figures


def main() -> None:
    """Run each variant in turn and report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument(
        "--shipped-messages",
        type=int,
        default=1000,
        help="messages for the shipped queue rates (10 replies/s: 1000 take 100 s)",
    )
    parser.add_argument("--monitor-messages", type=int, default=200)
    parser.add_argument("--connections", type=int, default=8, help="posting connections")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated")
    parser.add_argument("--profile", action="store_true", help="py-spy pyloto-unthrottled")
    parser.add_argument("--profile-messages", type=int, default=1000)
    parser.add_argument("--smoke", action="store_true", help="20 messages (CI)")
    parser.add_argument("--baseline", default=None, help="a checkout of earlier code to run too")
    args = parser.parse_args()
    if args.smoke:
        args.messages, args.monitor_messages, args.profile_messages = 20, 5, 20
    variants = [v for v in args.variants.split(",") if v]
    if args.baseline:
        _baseline_src.append(str(Path(args.baseline).resolve() / "src"))
        variants.append(BASELINE)
    unknown = set(variants) - set(VARIANTS) - {BASELINE}
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    print(f"pipeline: {args.messages} messages, fakes answering at once", flush=True)
    facts = machine()
    results: dict[str, dict[str, Any]] = {}
    with workspace("pipeline") as work, Processes(work) as procs:
        fakes = start_fakes(procs)
        for variant in variants:
            results[variant] = run_variant(variant, fakes, procs, args)
    text, figures = report(results)
    print()
    print(text)
    for name, result in results.items():
        if "profile" in result:
            print(f"\npy-spy of {name} (a separate batch of {args.profile_messages}):")
            print(_profile.describe(result["profile"]))
    path = write_results(
        "pipeline" if not args.smoke else "pipeline-smoke",
        {
            "machine": facts,
            "settings": vars(args),
            "results": results,
            "figures": figures,
            "targets": GOALS,
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
