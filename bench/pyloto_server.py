"""`pyloto serve` for bench/pipeline.py and bench/latency.py: the same settings (from the
environment), logging, wiring and uvicorn options as `pyloto_corp.cli._cmd_serve`, with two
differences a benchmark needs:

- the local queue counts the tasks it is given and the deliveries it runs, served at
  GET /bench/stats;
- `--queue-rates unthrottled` lifts the deploy guide's dispatch rates (inbound 50/s,
  outbound 10/s), keeping concurrency, attempts and backoff, to measure what the
  orchestration itself can do; `shipped` (the default) keeps them, as `pyloto serve` does.

    python bench/pyloto_server.py --port N [--queue-rates shipped|unthrottled]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import Any

import uvicorn
from litestar import get

from pyloto_corp.adapters.local_queue import LocalQueue
from pyloto_corp.adapters.secret_manager import resolve_references
from pyloto_corp.application.ports import Task, TaskHandler
from pyloto_corp.application.queues import QueueSpec
from pyloto_corp.bootstrap import bootstrap, queue_specs
from pyloto_corp.config import development_warnings, load_settings
from pyloto_corp.http.app import create_app
from pyloto_corp.http.read_deadline import read_deadline_protocol
from pyloto_corp.observability.logging import configure_logging

UNTHROTTLED_RATE = 1_000_000.0  # dispatches a second: no limit in practice


class CountingLocalQueue(LocalQueue):
    """The local queue, counting tasks enqueued and deliveries run."""

    def __init__(self, specs: Mapping[str, QueueSpec]) -> None:
        super().__init__(specs)
        self.enqueued: dict[str, int] = {}
        self.delivered: dict[str, int] = {}

    async def enqueue(self, task: Task) -> None:
        self.enqueued[task.state] = self.enqueued.get(task.state, 0) + 1
        await super().enqueue(task)

    def start(self, handler: TaskHandler) -> None:
        async def counted(task: Task, attempt: int) -> None:
            self.delivered[task.state] = self.delivered.get(task.state, 0) + 1
            await handler(task, attempt)

        super().start(counted)


def main() -> None:
    """Serve pyloto until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--queue-rates", choices=["shipped", "unthrottled"], default="shipped")
    args = parser.parse_args()

    settings = load_settings(resolve_references(os.environ))
    configure_logging(settings.app.log_level, project=settings.queue.gcp_project)
    for warning in development_warnings(settings):
        logging.getLogger("pyloto_corp").warning(warning, extra={"event": "development_default"})
    specs = queue_specs(settings)
    if args.queue_rates == "unthrottled":
        specs = {
            name: dataclasses.replace(spec, rate_per_second=UNTHROTTLED_RATE)
            for name, spec in specs.items()
        }
    queue = CountingLocalQueue(specs)
    app = create_app(bootstrap(settings, queue=queue))

    @get("/bench/stats", sync_to_thread=False)
    def stats() -> dict[str, Any]:
        return {
            "enqueued": queue.enqueued,
            "delivered": queue.delivered,
            "rates": {name: spec.rate_per_second for name, spec in specs.items()},
        }

    app.register(stats)
    try:  # as `pyloto serve` (code before the freeze, run by --baseline, has none)
        from pyloto_corp.runtime import freeze_startup_heap
    except ImportError:
        pass
    else:
        freeze_startup_heap()
    uvicorn.run(
        app,
        http=read_deadline_protocol(settings.app.request_read_timeout_seconds),
        host="127.0.0.1",
        port=args.port,
        access_log=False,
        log_config=None,
        proxy_headers=True,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
