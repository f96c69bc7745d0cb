"""Webhook ingest: requests/s and latency of pyloto's webhook path next to a bare Litestar
endpoint and pywa, under the same load and the same uvicorn settings, and of `pyloto serve`
as shipped.

    .venv/bin/python bench/ingest.py [--duration 10] [--warmup 2] [--connections 50]
                                     [--rounds 3] [--client auto|wrk|python] [--profile]
                                     [--smoke]

Each target runs alone, in its own process pinned to core 1 (bench/targets.py); the load
generator runs in its own process pinned to core 0: wrk with bench/webhook.lua when `wrk` is
installed (apt-get install wrk), else bench/loadgen.py. pyloto's private redis-server shares
core 0 with the client. Every request is a signed single-message webhook with a new wamid,
except a share (5 %) that re-posts an earlier body. Each target gets a warm-up first. The
targets run in turn, --rounds times (3), each time in fresh processes, and the round with
the median requests/s is reported (this machine is a VM whose speed varies between runs).

pyloto-sqlite and pyloto-redis (bench/targets.py) give pyloto's app a queue that only
counts: the webhook path alone. shipped-sqlite and shipped-redis are `pyloto serve` itself,
started as a user starts it, with nothing but the store and the secrets set: its local
queue runs the whole pipeline in the same process at the deploy guide's rates (dry-run
outbox, template replies), LOG_LEVEL at its default, and on Redis the durability it
demands by default (a private redis-server with the AOF, appendfsync always).

Prints a table and writes bench/results/ingest.json. --profile then loads pyloto once more
under py-spy and lists its hot spots (those figures are not the measured ones).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _profile
from _common import (
    APP_SECRET,
    BENCH,
    CLIENT_CPU,
    INTERNAL_TOKEN,
    PYTHON,
    RESULTS,
    SERVER_CPU,
    Processes,
    ProcessMeter,
    RedisServer,
    body_template,
    free_port,
    http_json,
    machine,
    table,
    wait_http,
    workspace,
    write_results,
)

TARGETS = ("bare", "pywa", "pyloto-sqlite", "pyloto-redis", "shipped-sqlite", "shipped-redis")
PYLOTO = ("pyloto-sqlite", "pyloto-redis")
SHIPPED = ("shipped-sqlite", "shipped-redis")
# --baseline DIR: the same pyloto targets on the code in DIR/src (a checkout of an earlier
# commit), measured in the same run, so old and new compare within one run.
BASELINE = ("baseline-sqlite", "baseline-redis")
BASELINE_SHIPPED = ("baseline-shipped-sqlite", "baseline-shipped-redis")
# The targets on a 2-core machine, for each pyloto target.
GOALS = {"c/a": 0.6, "c/b": 1.0, "p99 ms": 30.0}


def children_cpu() -> float:
    """CPU seconds of every child this process has waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def load(
    procs: Processes, client: str, port: int, seconds: float, tag: str, args: argparse.Namespace
) -> dict[str, Any]:
    """One load phase against 127.0.0.1:port; the client's summary plus its CPU seconds."""
    out = procs.workdir / f"load-{tag}.json"
    if client == "wrk":
        prefix, suffix = body_template()
        command = [
            "wrk", "-t1", f"-c{args.connections}", f"-d{max(1, round(seconds))}s",
            "--timeout", "10s", "-s", str(BENCH / "webhook.lua"),
            f"http://127.0.0.1:{port}/webhook",
            "--", APP_SECRET, prefix.decode(), suffix.decode(), str(args.duplicates), tag,
        ]  # fmt: skip
        env = {"BENCH_WRK_OUT": str(out)}
    else:
        command = [
            PYTHON, str(BENCH / "loadgen.py"), "--port", str(port),
            "--connections", str(args.connections), "--duration", str(seconds),
            "--warmup", "0", "--duplicates", str(args.duplicates), "--tag", tag,
            "--cpu", str(CLIENT_CPU),
        ]  # fmt: skip
        env = {}
    before = children_cpu()
    name = f"client-{tag}"
    process = procs.start(name, command, env=env, cpu=CLIENT_CPU)
    try:
        process.wait(timeout=seconds + 60)
    finally:
        procs.stop(process)
    if process.returncode != 0:
        raise RuntimeError(f"{client} failed ({process.returncode}):\n{procs.log_of(name)}")
    if client != "wrk":
        out.write_text(procs.log_of(name).strip().splitlines()[-1])
    summary: dict[str, Any] = json.loads(out.read_text())
    summary["client_cpu_seconds"] = children_cpu() - before
    summary["requests_per_second"] = summary["requests"] / summary["duration_s"]
    return summary


def median_round(found: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median requests/s, with every round's figures beside it."""
    ordered = sorted(found, key=lambda r: r["requests_per_second"])
    median = dict(ordered[(len(ordered) - 1) // 2])
    profiled = next((r["profile"] for r in found if "profile" in r), None)
    if profiled is not None:
        median["profile"] = profiled
    median["rounds"] = [
        {
            "requests_per_second": r["requests_per_second"],
            "latency_ms": r["latency_ms"],
            "server_cpu_ms_per_request": r["server"]["cpu_ms_per_request"],
        }
        for r in found
    ]
    return median


def shipped_command(port: int) -> list[str]:
    """`pyloto serve` as a user runs it (the module, so a --baseline checkout's code runs)."""
    return [PYTHON, "-m", "pyloto_corp.cli", "serve", "--port", str(port)]


def shipped_env(redis_url: str | None, sqlite_path: Path) -> dict[str, str]:
    """The store and the secrets: everything else at `pyloto serve`'s defaults."""
    from pyloto_corp.config import AppSettings

    env = {
        "WHATSAPP_APP_SECRET": APP_SECRET,
        "INTERNAL_TASK_TOKEN": INTERNAL_TOKEN,
        # The default, whatever the shell running the bench has set.
        "LOG_LEVEL": str(AppSettings.model_fields["log_level"].default),
        "STATE_SQLITE_PATH": str(sqlite_path),
    }
    if redis_url is not None:
        env |= {"STATE_BACKEND": "redis", "REDIS_URL": redis_url, "REDIS_KEY_PREFIX": "bench"}
    return env


def run_target(
    target: str, client: str, args: argparse.Namespace, profile_it: bool = True
) -> dict[str, Any]:
    """Start the target (and its Redis), warm it up, measure, stop everything."""
    with workspace(f"ingest-{target}") as work, Processes(work) as procs:
        extra: list[str] = []
        pids: dict[str, int] = {}
        redis = None
        env: dict[str, str] = {}
        shipped = target in SHIPPED + BASELINE_SHIPPED
        if target.endswith("-redis"):
            # `pyloto serve` refuses to acknowledge on a Redis that would not keep it.
            appendfsync = "always" if shipped else args.redis_appendfsync
            redis = RedisServer(procs, cpu=CLIENT_CPU, appendfsync=appendfsync)
            extra = ["--redis-url", redis.url]
            pids["redis"] = redis.process.pid
        elif target.endswith("-sqlite"):
            extra = ["--sqlite-path", str(work / "pyloto.db")]
        if target in BASELINE + BASELINE_SHIPPED:
            env = {"PYTHONPATH": str(Path(args.baseline).resolve() / "src")}
        port = free_port()
        if shipped:
            env |= shipped_env(redis.url if redis else None, work / "pyloto.db")
            server = procs.start(target, shipped_command(port), env=env, cpu=SERVER_CPU)
            stats_url = None  # `pyloto serve` serves no bench statistics
            wait_http(f"http://127.0.0.1:{port}/ready", server, procs, target)
        else:
            name = "pyloto" if target in PYLOTO + BASELINE else target
            command = [PYTHON, str(BENCH / "targets.py"), name, "--port", str(port)]
            server = procs.start(target, [*command, "--cpu", str(SERVER_CPU), *extra], env=env)
            stats_url = f"http://127.0.0.1:{port}/bench/stats"
            wait_http(stats_url, server, procs, target)
        pids["server"] = server.pid
        meter = ProcessMeter(pids)
        if args.warmup > 0:
            load(procs, client, port, args.warmup, "W", args)
            time.sleep(0.5)  # requests in flight when the warm-up stopped
        counted_before = http_json(stats_url) if stats_url else {}
        meter.start()
        result = load(procs, client, port, args.duration, "M", args)
        usage = meter.stop()
        time.sleep(0.2)  # pywa handles each update after answering
        counted_after = http_json(stats_url) if stats_url else {}
        result["server"] = usage["server"]
        result["server"]["cpu_ms_per_request"] = (
            usage["server"]["cpu_seconds"] * 1000 / max(1, result["requests"])
        )
        if redis is not None:
            result["redis"] = usage["redis"]
            result["redis"]["commands"] = redis.commandstats()
        result["client_core_utilisation"] = result["client_cpu_seconds"] / usage["wall_seconds"]
        result["counted"] = {
            key: counted_after[key] - counted_before.get(key, 0) for key in counted_after
        }
        if args.profile and profile_it and target in PYLOTO + SHIPPED:
            result["profile"] = profile(procs, client, port, server.pid, args, target)
        if redis is not None:
            redis.close()
        return result


def profile(
    procs: Processes, client: str, port: int, pid: int, args: argparse.Namespace, target: str
) -> dict[str, Any]:
    """Load the server once more under py-spy; its hot spots."""
    raw = procs.workdir / f"{target}.pyspy.txt"
    spy = _profile.record(procs, "py-spy", pid, args.duration, raw)
    load(procs, client, port, args.duration, "P", args)
    spy.wait(timeout=60)
    procs.stop(spy)
    summary = _profile.summarize(raw)
    keep = RESULTS / f"ingest-{target}.pyspy.txt"
    keep.parent.mkdir(parents=True, exist_ok=True)
    if raw.is_file():
        shutil.copyfile(raw, keep)
    summary["raw"] = str(keep)
    return summary


def _spread(result: dict[str, Any]) -> str:
    """min-max requests/s over the rounds."""
    values = [r["requests_per_second"] for r in result.get("rounds", [])]
    return f"{min(values):,.0f}-{max(values):,.0f}" if len(values) > 1 else "-"


def choose_client(wanted: str) -> str:
    """wrk when asked for or installed; else the Python client."""
    if wanted == "wrk" and shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk, or --client python")
    if wanted == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    return wanted


def report(results: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """The table and the ratios against the issue's targets."""
    rows = []
    for name, r in results.items():
        latency = r["latency_ms"]
        errors = sum(r["errors"].values())
        rows.append(
            [
                name,
                r["requests_per_second"],
                latency["p50"],
                latency["p95"],
                latency["p99"],
                errors,
                f"{r['server']['core_utilisation'] * 100:.0f} %",
                r["server"]["cpu_ms_per_request"],
                f"{r['client_core_utilisation'] * 100:.0f} %",
                f"{r['redis']['core_utilisation'] * 100:.0f} %" if "redis" in r else "-",
                _spread(r),
            ]
        )
    text = table(
        [
            "target",
            "req/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "errors",
            "server core",
            "server CPU ms/req",
            "client core",
            "redis core",
            "req/s over rounds",
        ],
        rows,
    )
    ratios: dict[str, Any] = {}
    for target in PYLOTO + SHIPPED + BASELINE + BASELINE_SHIPPED:
        if target not in results:
            continue
        pyloto = results[target]["requests_per_second"]
        for key, other in (("c/a", "bare"), ("c/b", "pywa")):
            if other in results:
                ratios[f"{target} {key}"] = pyloto / results[other]["requests_per_second"]
        ratios[f"{target} p99 ms"] = results[target]["latency_ms"]["p99"]
    for new, old in zip(PYLOTO + SHIPPED, BASELINE + BASELINE_SHIPPED, strict=True):
        if new in results and old in results:
            ratios[f"{new} ÷ {old}"] = (
                results[new]["requests_per_second"] / results[old]["requests_per_second"]
            )
    lines = []
    for key, value in ratios.items():
        if "÷" in key:
            lines.append(f"{key} = {value:.2f} req/s")
            continue
        goal = GOALS[key.split(" ", 1)[1]]
        met = value <= goal if key.endswith("ms") else value >= goal
        sign = "≤" if key.endswith("ms") else "≥"
        lines.append(f"{key} = {value:.2f} (target {sign} {goal}: {'met' if met else 'MISSED'})")
    return text + "\n\n" + "\n".join(lines), ratios


def main() -> None:
    """Run every target in turn and report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--duplicates", type=float, default=0.05, help="share re-posted")
    parser.add_argument("--client", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated")
    parser.add_argument("--profile", action="store_true", help="py-spy pyloto afterwards")
    parser.add_argument("--rounds", type=int, default=3, help="report each target's median")
    parser.add_argument(
        "--baseline", default=None, help="a checkout of earlier code: its pyloto targets too"
    )
    parser.add_argument(
        "--redis-appendfsync",
        choices=["always", "everysec"],
        default=None,
        help="the pyloto targets' Redis with the AOF too (the shipped ones always have it)",
    )
    parser.add_argument("--smoke", action="store_true", help="1 s, 10 connections (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.duration, args.warmup, args.connections, args.rounds = 1.0, 0.5, 10, 1
    client = choose_client(args.client)
    targets = [t for t in args.targets.split(",") if t]
    if args.baseline:
        # Each pyloto target's counterpart on the old code, after every new target.
        old_of = dict(zip(PYLOTO + SHIPPED, BASELINE + BASELINE_SHIPPED, strict=True))
        targets += [old_of[t] for t in list(targets) if t in old_of and old_of[t] not in targets]
    unknown = set(targets) - set(TARGETS) - set(BASELINE) - set(BASELINE_SHIPPED)
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    print(
        f"ingest: {args.connections} connections, {args.duration:g} s after {args.warmup:g} s "
        f"warm-up, {args.duplicates:.0%} duplicates, client {client}",
        flush=True,
    )
    facts = machine()
    rounds: dict[str, list[dict[str, Any]]] = {target: [] for target in targets}
    for number in range(1, args.rounds + 1):
        for target in targets:  # interleaved, so a slower spell of the machine hits all
            print(f"  round {number}: {target} …", flush=True)
            last = number == args.rounds
            rounds[target].append(run_target(target, client, args, profile_it=last))
    results = {target: median_round(found) for target, found in rounds.items()}
    text, ratios = report(results)
    print()
    print(text)
    for name, result in results.items():
        if "profile" in result:
            print(f"\npy-spy of {name} (a separate, profiled run):")
            print(_profile.describe(result["profile"]))
    path = write_results(
        "ingest" if not args.smoke else "ingest-smoke",
        {
            "machine": facts,
            "settings": {
                key: getattr(args, key)
                for key in (
                    "duration",
                    "warmup",
                    "connections",
                    "duplicates",
                    "rounds",
                    "smoke",
                    "redis_appendfsync",
                )
            }
            | {"client": client},
            "results": results,
            "ratios": ratios,
            "targets": GOALS,
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
