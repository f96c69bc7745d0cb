"""The three webhook servers bench/ingest.py loads, each run alone in its own process on
the same uvicorn settings (1 worker, uvloop, httptools, access log off), pinned to a core:

    python bench/targets.py bare   --port N [--cpu 1]
    python bench/targets.py pywa   --port N [--cpu 1]
    python bench/targets.py pyloto --port N [--cpu 1] --redis-url redis://...
    python bench/targets.py pyloto --port N [--cpu 1] --sqlite-path FILE

bare:   a Litestar POST /webhook that reads the body and answers 200: the floor.
pywa:   pywa_async's own Starlette integration (`WhatsApp(server=Starlette())`, the
        `pywa[server]` extra) with the app secret, so it checks X-Hub-Signature-256, parses
        the update and runs a no-op message handler (as a background task after the answer,
        pywa's design); duplicates are skipped by its update-hash cache.
pyloto: pyloto's own app (`bootstrap(settings, queue=...)` + `create_app`) on the SQLite
        store (`pyloto serve`'s default: WAL, synchronous=FULL) or the Redis store, with
        JSON logs as `pyloto serve` writes them, and a queue that only counts what it is
        given: the figure is the webhook path (verify, parse, the group-committed
        create-if-absent, enqueue), not the pipeline behind it.

Each serves GET /bench/stats (what it counted) besides the webhook.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import APP_SECRET, INTERNAL_TOKEN, pin_self


def run(
    app: Any, port: int, log_config: Any = uvicorn.config.LOGGING_CONFIG, http: Any = "httptools"
) -> None:
    """The one uvicorn configuration every target shares (pyloto's own protocol class is
    httptools' with `pyloto serve`'s read deadline)."""
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        workers=1,
        loop="uvloop",
        http=http,
        access_log=False,
        log_config=log_config,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=5,
    )


def bare_app() -> Any:
    """Litestar with one handler: read the body, answer 200."""
    from litestar import Litestar, Request, get, post

    counts = {"requests": 0}

    @post("/webhook", status_code=200)
    async def webhook(request: Request[Any, Any, Any]) -> None:
        await request.body()
        counts["requests"] += 1

    @get("/bench/stats", sync_to_thread=False)
    def stats() -> dict[str, int]:
        return counts

    return Litestar([webhook, stats], openapi_config=None, logging_config=None)


def pywa_app() -> Any:
    """pywa's Starlette integration with a no-op message handler."""
    from pywa_async import WhatsApp
    from pywa_async.types import Message
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    counts = {"messages": 0}

    async def stats(_: Request) -> JSONResponse:
        return JSONResponse(counts)

    app = Starlette()
    app.add_route("/bench/stats", stats, methods=["GET"])
    wa = WhatsApp(
        server=app,
        verify_token="bench-verify-token",
        app_secret=APP_SECRET,
        webhook_endpoint="/webhook",
        validate_updates=True,
    )

    @wa.on_message()
    async def no_op(_: WhatsApp, __: Message) -> None:
        counts["messages"] += 1

    return app


class CountingQueue:
    """A TaskQueue that accepts every task and only counts it: nothing runs."""

    def __init__(self) -> None:
        self.enqueued = 0

    async def enqueue(self, task: Any) -> None:
        self.enqueued += 1

    async def ping(self) -> None:
        return None


def pyloto_app(redis_url: str | None, sqlite_path: str | None) -> Any:
    """pyloto's app on Redis or SQLite with a paused (counting) queue, logging as `pyloto
    serve`."""
    from litestar import get

    from pyloto_corp.bootstrap import bootstrap
    from pyloto_corp.config import load_settings
    from pyloto_corp.http.app import create_app
    from pyloto_corp.observability.logging import configure_logging

    backend = (
        {
            "STATE_BACKEND": "redis",
            "REDIS_URL": redis_url,
            "REDIS_KEY_PREFIX": "bench",
            "REDIS_DURABILITY": "none",  # the bench's Redis keeps nothing on disk
        }
        if redis_url
        else {"STATE_BACKEND": "sqlite", "STATE_SQLITE_PATH": str(sqlite_path)}
    )
    environ = {
        **os.environ,
        **backend,
        "WHATSAPP_APP_SECRET": APP_SECRET,
        "INTERNAL_TASK_TOKEN": INTERNAL_TOKEN,
    }
    settings = load_settings(environ)
    configure_logging(settings.app.log_level, project=settings.queue.gcp_project)
    queue = CountingQueue()
    app = create_app(bootstrap(settings, queue=queue))

    @get("/bench/stats", sync_to_thread=False)
    def stats() -> dict[str, int]:
        return {"enqueued": queue.enqueued}

    app.register(stats)
    return app


def main() -> None:
    """Build the chosen target and serve it until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("target", choices=["bare", "pywa", "pyloto"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this core")
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--sqlite-path", default=None)
    args = parser.parse_args()
    pin_self(args.cpu)
    if args.target == "bare":
        run(bare_app(), args.port)
    elif args.target == "pywa":
        logging.getLogger("pywa").setLevel(logging.WARNING)
        run(pywa_app(), args.port)
    else:
        if not (args.redis_url or args.sqlite_path):
            parser.error("pyloto needs --redis-url or --sqlite-path")
        from pyloto_corp.http.read_deadline import read_deadline_protocol

        app = pyloto_app(args.redis_url, args.sqlite_path)
        try:  # as `pyloto serve` (code before the freeze, run by --baseline, has none)
            from pyloto_corp.runtime import freeze_startup_heap
        except ImportError:
            pass
        else:
            freeze_startup_heap()
        # pyloto's JSON logging and request read deadline, as `pyloto serve`
        run(app, args.port, log_config=None, http=read_deadline_protocol(10.0))


if __name__ == "__main__":
    main()
