"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get

from pyloto_corp import __version__
from pyloto_corp.application.ports import QueueUnavailable, StoreUnavailable
from pyloto_corp.http.deps import container_of


@get("/health", sync_to_thread=False)
def health() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok", "version": __version__}


@get("/ready")
async def ready(request: Request[Any, Any, Any]) -> Response[dict[str, str]]:
    """200 only when the store and the queue answer; `durability` says how the store keeps
    what it acknowledged (`sqlite`, or Redis's `aof`, `rdb`, `aof+rdb`, `none`, `unknown`)."""
    container = container_of(request)
    checks = {"store": "ok", "queue": "ok"}
    try:
        await container.store.ping()
        checks["durability"] = await container.store.durability()
    except StoreUnavailable:
        checks["store"] = "unavailable"
    try:
        await container.queue.ping()
    except QueueUnavailable:
        checks["queue"] = "unavailable"
    ok = checks["store"] == checks["queue"] == "ok"
    return Response(
        {"status": "ok" if ok else "unavailable", **checks}, status_code=200 if ok else 503
    )
