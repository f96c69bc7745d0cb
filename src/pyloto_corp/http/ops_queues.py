"""The console's Queues page (/ops/queues) and its JSON (/ops/api/queues): each queue's
tasks waiting, running and retrying, the oldest waiting task, and on Redis the instances by
heartbeat with the records they adopted from dead ones.

Like every console page but the inbox it carries no personal data: a retrying task is named
by its message's log reference, an instance by its random id.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from litestar import Controller, MediaType, Request, Response, get

from pyloto_corp.adapters.local_queue import LocalQueue
from pyloto_corp.application.ports import QueueFigures, QueueStats, RetryFigure
from pyloto_corp.application.queue_figures import (
    InstanceRow,
    QueuesView,
    oldest_waiting_seconds,
    queues_view,
)
from pyloto_corp.application.queues import INBOUND, OUTBOUND, QueueSpec
from pyloto_corp.bootstrap import Container
from pyloto_corp.domain.privacy import message_ref
from pyloto_corp.http import ops
from pyloto_corp.http import ops_pages as pages

NOT_ON_CLOUD_TASKS = "not available on Cloud Tasks"


def _age(seconds: float | None) -> str:
    """A short span to the tenth or the second (`0.4 s`, `3 min 5 s`), or `-`."""
    return "-" if seconds is None else pages.duration_text(seconds, exact=True)


def _figure(value: int | None) -> str:
    """A count, or why there is none (never a made-up 0)."""
    return NOT_ON_CLOUD_TASKS if value is None else str(value)


def _specs(container: Container) -> Mapping[str, QueueSpec]:
    queue = container.queue
    if isinstance(queue, LocalQueue):
        return queue.specs
    return {INBOUND.name: INBOUND, OUTBOUND.name: OUTBOUND}


async def view_of(container: Container, now: float) -> QueuesView:
    """The page's figures, from the container's queue and instance registry."""
    queue = container.queue
    stats = queue if isinstance(queue, QueueStats) else None
    specs = _specs(container)
    return await queues_view(stats, container.instances, container.retries_seen, specs, now)


def _limits(spec: QueueSpec | None) -> str:
    if spec is None:
        return "-"
    return (
        f"{spec.rate_per_second:g}/s, {spec.max_concurrent} concurrent, "
        f"{spec.max_attempts} attempts, backoff {spec.min_backoff_seconds:g}-"
        f"{spec.max_backoff_seconds:g} s"
    )


def _next_attempt(retry: RetryFigure, backend: str, now: float) -> str:
    if retry.next_at is not None:
        return f"{pages.when(retry.next_at)} (in {_age(max(0.0, retry.next_at - now))})"
    if backend == "cloud_tasks":
        return NOT_ON_CLOUD_TASKS
    return "running now"


def _retries_table(figures: QueueFigures, now: float) -> str:
    if not figures.retries:
        return f'<p class="muted" id="no-retries-{pages.e(figures.queue)}">No task is retrying.</p>'
    cloud = figures.backend == "cloud_tasks"
    rows = "".join(
        f'<tr class="retry"><td><code>{pages.e(message_ref(r.message_id))}</code></td>'
        f"<td>{pages.e(r.state)}</td>"
        f'<td class="num">{r.attempt}</td>'
        f"<td>{pages.e(_next_attempt(r, figures.backend, now))}</td>"
        f"<td>{pages.e(_age(r.backoff_seconds) if r.backoff_seconds is not None else '-')}</td>"
        + (f"<td>{pages.e(pages.when(r.seen_at))}</td>" if cloud else "")
        + "</tr>"
        for r in figures.retries
    )
    head = (
        '<tr><th>Message (log ref)</th><th>Step</th><th class="num">Attempt</th>'
        "<th>Next attempt</th><th>Backoff</th>" + ("<th>Seen</th>" if cloud else "") + "</tr>"
    )
    more = ""
    if figures.retrying is not None and figures.retrying > len(figures.retries):
        more = f'<p class="muted">and {figures.retrying - len(figures.retries)} more.</p>'
    return (
        f'<div class="scroll"><table class="retries" id="retries-{pages.e(figures.queue)}">'
        f"<thead>{head}</thead><tbody>{rows}</tbody></table></div>{more}"
    )


def _queue_card(figures: QueueFigures, spec: QueueSpec | None, now: float) -> str:
    oldest = oldest_waiting_seconds(figures, now)
    if oldest is None and figures.backend == "cloud_tasks" and figures.depth is None:
        oldest_text = NOT_ON_CLOUD_TASKS
    else:
        oldest_text = _age(oldest) if oldest is not None else "none waiting"
    facts = [
        ("Waiting (depth)", "depth", _figure(figures.depth)),
        ("In flight", "in-flight", _figure(figures.in_flight)),
        ("Retrying (attempt 2 or later)", "retrying", _figure(figures.retrying)),
        ("Oldest waiting task", "oldest", oldest_text),
    ]
    if figures.backend == "cloud_tasks":
        executed = _figure(figures.executed_last_minute)
        facts.append(("Executed in the last minute", "executed", executed))
    facts.append(("Limits", "limits", _limits(spec)))
    name = pages.e(figures.queue)
    dl = "".join(
        f'<dt>{pages.e(label)}</dt><dd class="{key}" id="{key}-{name}">{pages.e(value)}</dd>'
        for label, key, value in facts
    )
    note = f'<p class="muted note">{pages.e(figures.note)}.</p>' if figures.note else ""
    return (
        f'<div class="card queue" id="queue-{name}" data-queue="{name}">'
        f'<h2>{name}</h2><dl class="facts">{dl}</dl>{note}'
        f"<h3>Retries in progress</h3>{_retries_table(figures, now)}</div>"
    )


def _instances_card(view: QueuesView) -> str:
    if view.instances is None:
        return (
            '<div class="card" id="instances"><h2>Instances</h2>'
            '<p class="muted" id="single-instance">A single instance: this store (SQLite) '
            "is this process's alone, so there are no heartbeats and nothing to adopt.</p></div>"
        )
    rows = "".join(
        f'<tr class="instance {pages.e(r.status)}"><td><code>{pages.e(r.instance_id[:12])}</code>'
        + (' <span class="muted">(this one)</span>' if r.this else "")
        + f"</td><td>{pages.e(r.status)}</td>"
        f"<td>{pages.e(_age(r.beat_age) + ' ago' if r.beat_age is not None else '-')}</td>"
        f'<td class="num">{r.adopted}</td><td>{pages.e(pages.when(r.adopted_at))}</td></tr>'
        for r in view.instances
    )
    table = (
        '<div class="scroll"><table id="instance-list"><thead><tr><th>Instance</th>'
        '<th>Status</th><th>Last heartbeat</th><th class="num">Adopted</th>'
        f"<th>Last adoption</th></tr></thead><tbody>{rows}</tbody></table></div>"
        if view.instances
        else '<p class="muted">No instance has beaten yet.</p>'
    )
    return (
        '<div class="card" id="instances"><h2>Instances</h2>'
        f'<p id="instances-summary">{view.live_instances} live; '
        f'<span id="adopted-total">{view.adopted_total}</span> records adopted from dead '
        "instances (counted for 7 days after the last adoption).</p>"
        f"{table}</div>"
    )


def queues_page(view: QueuesView, csrf: str) -> str:
    """The Queues page: a card per queue, then the instances."""
    backend = {q.backend for q in view.queues}
    where = (
        "Cloud Tasks: its queue statistics where it gives them (GetQueue, v2beta3)."
        if "cloud_tasks" in backend
        else "The in-process queue: read from its memory."
    )
    cards = "".join(_queue_card(q, view.specs.get(q.queue), view.at) for q in view.queues)
    if not view.queues:
        cards = '<p class="muted" id="no-queues">The queue is not running.</p>'
    body = (
        "<h1>Queues</h1>"
        f'<p class="muted">{pages.e(where)} As of {pages.e(pages.when(view.at))}; '
        '<a href="/ops/queues" id="refresh">refresh</a>.</p>'
        f'<div class="grid queues">{cards}</div>{_instances_card(view)}'
    )
    return pages.page("Queues", body, "queues", csrf)


def _retry_json(retry: RetryFigure) -> dict[str, Any]:
    return {
        "ref": message_ref(retry.message_id),
        "state": retry.state,
        "attempt": retry.attempt,
        "next_at": retry.next_at,
        "backoff_seconds": retry.backoff_seconds,
        "seen_at": retry.seen_at,
    }


def _instance_json(row: InstanceRow) -> dict[str, Any]:
    return {
        "id": row.instance_id,
        "status": row.status,
        "beat_age_seconds": row.beat_age,
        "adopted": row.adopted,
        "adopted_at": row.adopted_at,
        "this": row.this,
    }


def queues_json(view: QueuesView) -> bytes:
    """The page's figures as JSON; null is a figure the queue does not give."""
    queues = [
        {
            "queue": q.queue,
            "backend": q.backend,
            "depth": q.depth,
            "in_flight": q.in_flight,
            "retrying": q.retrying,
            "oldest_waiting_seconds": oldest_waiting_seconds(q, view.at),
            "executed_last_minute": q.executed_last_minute,
            "note": q.note,
            "retries": [_retry_json(r) for r in q.retries],
        }
        for q in view.queues
    ]
    instances = None if view.instances is None else [_instance_json(r) for r in view.instances]
    data = {
        "at": view.at,
        "queues": queues,
        "instances": instances,
        "adopted_total": view.adopted_total if instances is not None else None,
    }
    return json.dumps(data).encode()


class QueuesController(Controller):
    """The Queues page and its JSON, for any signed-in person."""

    path = "/ops"
    exception_handlers = ops.PAGE_ERRORS

    @get("/queues")
    async def queues(self, request: Request[Any, Any, Any]) -> Response[str]:
        """Each queue's figures and the instances."""
        console, principal = await ops._session(request)
        view = await view_of(console.container, time.time())
        return ops._html(queues_page(view, ops._csrf(principal)))

    @get("/api/queues")
    async def queues_api(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        """The same figures as JSON."""
        console, _ = await ops._session(request)
        view = await view_of(console.container, time.time())
        return Response(queues_json(view), media_type=MediaType.JSON, headers=ops._HEADERS)
