"""bench/pyloto_server.py's counting queue still fits the local queue it extends.

The benchmarks are not type-checked with src, so a change to the queue's interface would
otherwise surface only when a benchmark is run.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from pyloto_corp.application.ports import Task
from pyloto_corp.application.queues import QueueSpec
from tests.support.helpers import eventually

pytestmark = pytest.mark.anyio

SERVER = Path(__file__).resolve().parents[2] / "bench" / "pyloto_server.py"


def load_bench_server() -> ModuleType:
    """Import bench/pyloto_server.py (bench/ is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("bench_pyloto_server", SERVER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_counting_queue_counts_what_it_enqueues_and_delivers() -> None:
    bench = load_bench_server()
    lane = QueueSpec("inbound", rate_per_second=1000.0, max_concurrent=2, max_attempts=3)
    queue = bench.CountingLocalQueue({"inbound": lane})
    handled: list[tuple[str, int]] = []

    async def handler(task: Task, attempt: int) -> None:
        handled.append((task.message_id, attempt))

    queue.start(handler)
    try:
        for n in range(3):
            await queue.enqueue(Task(f"wamid.B{n}", "received", "inbound"))
        await eventually(lambda: len(handled) == 3)
    finally:
        await queue.stop()

    assert queue.enqueued == {"received": 3}
    assert queue.delivered == {"received": 3}
    assert sorted(handled) == [(f"wamid.B{n}", 1) for n in range(3)]
