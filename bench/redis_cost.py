"""CPU per Redis script call of the store's two clients: redis-py's AsyncScript (the way the
hot path was) and the wire (adapters/redis/wire.py, the way it is).

    .venv/bin/python bench/redis_cost.py [--calls 5000] [--concurrency 50] [--smoke]

Starts a private in-memory redis-server (bench/_common.py, on its own core) and, in this
process on uvloop, makes --calls EVALSHA calls one after another, then the same number spread
over --concurrency callers, reading time.process_time() around each run: this process's CPU
per call, the client's only. Two scripts:

  trivial     `return 1`: the cost of the call machinery alone
  lease_get   the store's step lease and load (lease_get.lua) of a stored record, as each step
              begins: a record's ~700 bytes come back

Writes bench/results/redis_cost.json. Numbers only, no verdict.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
from _common import (
    CLIENT_CPU,
    SERVER_CPU,
    Processes,
    RedisServer,
    machine,
    pin_self,
    table,
    workspace,
    write_results,
)

try:  # the store's own folder, with its scripts as files
    from pyloto_corp.adapters.redis import RedisWire, Script, connect
    from pyloto_corp.adapters.redis.scripts import BODIES

    LEASE_GET = BODIES["lease_get"]
except ImportError:  # a tree from before it (a --baseline or an older checkout)
    from pyloto_corp.adapters.redis_store import _LEASE_GET as LEASE_GET  # type: ignore
    from pyloto_corp.adapters.redis_store import connect  # type: ignore
    from pyloto_corp.adapters.redis_wire import RedisWire, Script  # type: ignore

Call = Callable[[int], Awaitable[object]]
RECORD_DATA = b'{"message_id":"wamid.BENCH","state":"llm2","text":"' + b"x" * 640 + b'"}'


async def cpu_per_call(call: Call, calls: int, concurrency: int) -> float:
    """CPU microseconds per call over `calls` calls by `concurrency` callers."""
    for index in range(50):  # warm: connections open, scripts loaded
        await call(index)

    async def caller(start: int) -> None:
        for index in range(start, calls, concurrency):
            await call(index)

    started = time.process_time()
    await asyncio.gather(*(caller(start) for start in range(concurrency)))
    return (time.process_time() - started) / calls * 1e6


def arguments(script: str, index: int) -> tuple[list[str], list[Any]]:
    """Keys and arguments of call `index` of `script`."""
    if script == "trivial":
        return [], []
    keys = ["bench:rec:m", "bench:ref:m", f"bench:lease:{index}"]
    return keys, ["bench:delivery:", "owner", 1000, 0, "bench:conv:", "bench:chat:"]


async def measure(url: str, calls: int, concurrency: int) -> list[list[Any]]:
    """Rows: script, client, CPU µs/call sequential, CPU µs/call concurrent."""
    client = connect(url, 2.0)
    wire = RedisWire.for_client(client)
    assert wire is not None
    await client.hset("bench:rec:m", mapping={"d": RECORD_DATA, "o": ""})
    bodies = {"trivial": "return 1", "lease_get": LEASE_GET}
    rows: list[list[Any]] = []
    try:
        for name, body in bodies.items():
            old_script = client.register_script(body)
            new_script = Script(body)

            async def old(index: int, name: str = name, script: Any = old_script) -> object:
                keys, args = arguments(name, index)
                return await script(keys=keys, args=args)

            async def new(index: int, name: str = name, script: Script = new_script) -> object:
                keys, args = arguments(name, index)
                return await wire.evalsha(script, keys, args)

            for label, call in (("redis-py AsyncScript", old), ("redis_wire", new)):
                sequential = await cpu_per_call(call, calls, 1)
                concurrent = await cpu_per_call(call, calls, concurrency)
                rows.append([name, label, round(sequential, 1), round(concurrent, 1)])
    finally:
        await wire.aclose()
        await client.aclose()
    return rows


def main() -> None:
    """Measure and report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--smoke", action="store_true", help="200 calls a case (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.calls = 200
    try:
        import uvloop
    except ImportError:
        uvloop = None
    print(f"redis_cost: {args.calls} calls a case, sequential and {args.concurrency} callers")
    facts = machine()
    with workspace("redis_cost") as workdir, Processes(workdir) as procs:
        redis = RedisServer(procs, cpu=CLIENT_CPU)
        pin_self(SERVER_CPU)
        coroutine = measure(redis.url, args.calls, args.concurrency)
        rows = uvloop.run(coroutine) if uvloop is not None else asyncio.run(coroutine)
        redis.close()
    headers = ["script", "client", "CPU µs/call sequential", f"CPU µs/call x{args.concurrency}"]
    print()
    print(table(headers, rows))
    path = write_results(
        "redis_cost" if not args.smoke else "redis_cost-smoke",
        {
            "machine": facts,
            "settings": vars(args),
            "loop": "uvloop" if uvloop is not None else "asyncio",
            "cpu_us_per_call": [dict(zip(headers, row, strict=True)) for row in rows],
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
