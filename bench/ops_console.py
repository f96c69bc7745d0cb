"""Server time of the operations console's pages with many records stored.

    .venv/bin/python bench/ops_console.py [--records 10000] [--requests 40] [--smoke]

For each store (SQLite, and Redis on a private redis-server), stores --records records
spread over the last day, each taken through its whole lifecycle by the store's own saves
(so the per-state counts and the minute and hour counters are what a day of traffic leaves:
most sent, some through the fallback, some dead letters; each LLM step's call saved with
its transition, on two models, the fallbacks' calls failed), then signs in to the console and
requests each page --requests times in this process through the ASGI app (no network, no
client: the time is the server's), reporting median and p95 per page. Writes
bench/results/ops_console.json. Numbers only, no verdict.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
import httpx
from _common import (
    INTERNAL_TOKEN,
    SERVER_CPU,
    Processes,
    RedisServer,
    machine,
    percentile,
    pin_self,
    table,
    workspace,
    write_results,
)

from pyloto_corp.application.accounts import AccountError
from pyloto_corp.bootstrap import bootstrap
from pyloto_corp.config import Settings
from pyloto_corp.domain.records import HistoryEntry, InboundMessage, Record
from pyloto_corp.domain.results import LLMCall, Results
from pyloto_corp.http.app import create_app

HAPPY = ["deduped", "llm1", "llm2", "llm3", "queued_outbound", "sending", "sent"]
FALLBACK = ["deduped", "llm1", "fallback", "queued_outbound", "sending", "sent"]
DEAD = ["deduped", "llm1", "llm2", "llm3", "queued_outbound", "sending", "failed"]
PAGES = [
    ("main page", "/ops"),
    ("summary (polled)", "/ops/api/summary"),
    ("records, all", "/ops/records"),
    ("records, sent", "/ops/records?state=sent"),
    ("records, by reason", "/ops/records?reason=llm_timeout"),
    ("dead letters", "/ops/dead-letters"),
    ("queues", "/ops/queues"),
]


# The LLM steps' states, and the models their calls ask for (one in ten on a second one).
LLM_STATES = ("llm1", "llm2", "llm3")
MODELS = ("gpt-4o-mini", "gpt-4.1-mini")


def _results(record: Record, dest: str, i: int, reason: str | None, ms: float) -> Results:
    """`record`'s results after the move to `dest`: the call of an LLM step's state, or the
    failed call of a fallback."""
    model = MODELS[1] if i % 10 == 0 else MODELS[0]
    if dest in LLM_STATES:
        call = LLMCall(ms, 400, 60, f"{model}-2024-07-18", model)
        return replace(record.results, **{dest: call})
    if dest == "fallback":
        failure = "timeout" if reason == "llm_timeout" else "invalid_output"
        call = LLMCall(ms, 400, 0, model, model, failure)
        return replace(record.results, fallback_step="llm2", failed_call=call)
    return record.results


def _path(i: int) -> tuple[list[str], str | None, str | None]:
    if i % 50 == 0:
        return DEAD, None, "graph 131026: message undeliverable"
    if i % 7 == 0:
        return FALLBACK, "llm_timeout" if i % 2 else "llm_invalid", None
    return HAPPY, None, None


async def populate(store: Any, count: int, now: float) -> None:
    """`count` records created over the last day, each saved through its lifecycle."""
    rng = random.Random(7)
    batch = 500
    lanes = asyncio.Semaphore(32)  # under the Redis client's connection pool
    for first in range(0, count, batch):
        records = []
        for i in range(first, min(count, first + batch)):
            at = now - rng.uniform(0, 86_000)
            inbound = InboundMessage(
                f"wamid.BENCH{i:08d}", f"55119{i:08d}", "text", int(at), text="Oi, tudo bem?"
            )
            records.append(replace(Record.received(inbound, at), conversation=f"c{i % 900}"))
        await store.create_if_absent(records)

        async def walk(record: Record, i: int) -> None:
            async with lanes:
                await _walk(record, i)

        async def _walk(record: Record, i: int) -> None:
            path, reason, failure = _path(i)
            at = record.created_at
            for dest in path:
                step_ms = rng.uniform(2, 900)
                at += step_ms / 1000.0
                trigger = "fall_back" if dest == "fallback" else "bench"
                entry = HistoryEntry(record.state, dest, trigger, at, step_ms, 1)
                moved = replace(
                    record,
                    state=dest,
                    version=record.version + 1,
                    updated_at=at,
                    history=[*record.history, entry],
                    results=_results(record, dest, i, reason, step_ms),
                    fallback_reason=reason if dest == "fallback" else record.fallback_reason,
                    failure_reason=failure if dest == "failed" else None,
                )
                assert await store.save(moved, record.version)
                record = moved

        await asyncio.gather(*(walk(r, first + k) for k, r in enumerate(records)))


# The console account the benchmark signs in with.
BENCH_ACCOUNT = "bench"
BENCH_PASSWORD = "bench-console-password"


async def measure(store_env: dict[str, str], records: int, requests: int) -> dict[str, Any]:
    for key, value in store_env.items():
        os.environ[key] = value
    container = bootstrap(Settings())
    started = time.perf_counter()
    await populate(container.store, records, time.time())
    filled = time.perf_counter() - started
    app = create_app(container)
    transport = httpx.ASGITransport(app=app)
    results: dict[str, Any] = {"populate_seconds": round(filled, 1)}
    assert container.accounts is not None
    with contextlib.suppress(AccountError):  # made by an earlier run on the same store
        await container.accounts.add(BENCH_ACCOUNT, "operator", BENCH_PASSWORD)
    async with httpx.AsyncClient(transport=transport, base_url="http://console") as client:
        form = {"name": BENCH_ACCOUNT, "password": BENCH_PASSWORD}
        signed = await client.post("/ops/login", data=form)
        assert signed.status_code == 303, signed.status_code
        for name, path in PAGES:
            for _ in range(3):  # warm-up
                (await client.get(path)).raise_for_status()
            times = []
            for _ in range(requests):
                t0 = time.perf_counter()
                response = await client.get(path)
                times.append((time.perf_counter() - t0) * 1000.0)
                response.raise_for_status()
            results[name] = {
                "median_ms": round(percentile(times, 50), 2),
                "p95_ms": round(percentile(times, 95), 2),
                "bytes": len(response.content),
            }
    await container.store.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--smoke", action="store_true", help="300 records, 5 requests")
    args = parser.parse_args()
    if args.smoke:
        args.records, args.requests = 300, 5
    pin_self(SERVER_CPU)
    common = {
        "OPS_CONSOLE_ENABLED": "true",
        "INTERNAL_TASK_TOKEN": INTERNAL_TOKEN,
        "LOG_LEVEL": "WARNING",
        "OTEL_TRACES_EXPORTER": "none",
    }
    found: dict[str, Any] = {}
    with workspace("ops-console") as work, Processes(work) as procs:
        sqlite = {**common, "STATE_BACKEND": "sqlite", "STATE_SQLITE_PATH": str(work / "state.db")}
        found["sqlite"] = asyncio.run(measure(sqlite, args.records, args.requests))
        redis = RedisServer(procs)
        on_redis = {
            **common,
            "STATE_BACKEND": "redis",
            "REDIS_URL": redis.url,
            "REDIS_DURABILITY": "none",  # the bench's Redis keeps nothing on disk
            "REDIS_KEY_PREFIX": "bench",
        }
        os.environ.pop("STATE_SQLITE_PATH", None)
        found["redis"] = asyncio.run(measure(on_redis, args.records, args.requests))
    rows = [
        (name, found[b][name]["median_ms"], found[b][name]["p95_ms"], b)
        for b in ("sqlite", "redis")
        for name, _ in PAGES
    ]
    print(f"{args.records} records; {args.requests} requests per page; server time in ms")
    print(table(["page", "median ms", "p95 ms", "store"], rows))
    for b in ("sqlite", "redis"):
        print(f"{b}: stored and walked {args.records} records in {found[b]['populate_seconds']} s")
    path = write_results(
        "ops_console",
        {"machine": machine(), "records": args.records, "requests": args.requests, **found},
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
