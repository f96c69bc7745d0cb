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
    """200 only when the store and the queue answer and the store keeps what it acknowledges;
    `durability` says how it keeps it (`sqlite`, or Redis's `aof`, `rdb`, `aof+rdb`, `none`,
    `unknown`), and `not_durable` why webhooks are refused when REDIS_DURABILITY is not met."""
    container = container_of(request)
    checks = {"store": "ok", "queue": "ok"}
    gate = container.durability
    try:
        await container.store.ping()
        if gate is None:
            checks["durability"] = await container.store.durability()
        else:
            reason = await gate.check()
            if gate.mode is None:  # it stopped answering since the ping
                raise StoreUnavailable(reason or "")
            checks["durability"] = gate.mode
            if reason is not None:
                checks["not_durable"] = reason
    except StoreUnavailable:
        checks["store"] = "unavailable"
    try:
        await container.queue.ping()
    except QueueUnavailable:
        checks["queue"] = "unavailable"
    ok = checks["store"] == checks["queue"] == "ok" and "not_durable" not in checks
    return Response(
        {"status": "ok" if ok else "unavailable", **checks}, status_code=200 if ok else 503
    )
