"""Google Cloud Tasks: each transition is an HTTP task that calls the service back.

A task calls the route of its kind (`route`): a handoff notice's delivery the notify route,
every other task the advance route. Task names are a hash of (message id, state), so a
second enqueue of the same step is refused by Cloud Tasks (ALREADY_EXISTS) and taken as
success; the sweeper adds a suffix per sweep window so it can re-queue a record whose task
is gone. Nothing here keeps per-process state: any instance can enqueue or run any task.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.api_core import exceptions as google_errors
from google.auth.credentials import AnonymousCredentials
from google.cloud import tasks_v2, tasks_v2beta3
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcAsyncIOTransport
from google.cloud.tasks_v2beta3.services.cloud_tasks.transports import (
    CloudTasksGrpcAsyncIOTransport as StatsGrpcTransport,
)
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2

from pyloto_corp.application.handoff_notices import NOTIFY_STATE
from pyloto_corp.application.ports import QueueFigures, QueueUnavailable, Task
from pyloto_corp.application.queues import QueueSpec

ADVANCE_PATH = "/internal/tasks/advance"
NOTIFY_PATH = "/internal/tasks/notify"
CALL_TIMEOUT_SECONDS = 10.0


_Transport = TypeVar("_Transport")


def _emulator_transport(kind: Callable[..., _Transport], emulator_host: str) -> _Transport:
    """A gRPC transport on an insecure channel to the emulator, with no credentials."""
    return kind(
        channel=grpc.aio.insecure_channel(emulator_host),
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
    )


def create_client(emulator_host: str | None) -> tasks_v2.CloudTasksAsyncClient:
    """The async client: an insecure channel to the emulator when one is named, else ADC."""
    if emulator_host:
        transport = _emulator_transport(CloudTasksGrpcAsyncIOTransport, emulator_host)
        return tasks_v2.CloudTasksAsyncClient(transport=transport)
    return tasks_v2.CloudTasksAsyncClient()


def create_stats_client(emulator_host: str | None) -> tasks_v2beta3.CloudTasksAsyncClient:
    """The v2beta3 client that reads queue statistics (v2 has none), built like the other."""
    if emulator_host:
        transport = _emulator_transport(StatsGrpcTransport, emulator_host)
        return tasks_v2beta3.CloudTasksAsyncClient(transport=transport)
    return tasks_v2beta3.CloudTasksAsyncClient()


# Queue statistics are a v2beta3 field, Queue.stats, which GetQueue fills in only when its
# read mask asks for `stats` (left out of the default answer): GetQueueRequest.read_mask in
# https://cloud.google.com/tasks/docs/reference/rpc/google.cloud.tasks.v2beta3#getqueuerequest
# and QueueStats (estimated tasks_count, oldest_estimated_arrival_time, executed last minute,
# concurrent dispatches) in the same reference, #queuestats. gcloud-tasks-emulator serves
# google.cloud.tasks.v2 alone: the v2beta3 call is UNIMPLEMENTED there, so no figure.
STATS_MASK = ("stats",)
NO_STATS = "not available on Cloud Tasks"


NO_V2BETA3 = f"{NO_STATS}: this endpoint does not serve v2beta3 GetQueue (an emulator?)"


def figures_of(
    queue: str, stats: tasks_v2beta3.QueueStats | None, now: float, why: str = NO_STATS
) -> QueueFigures:
    """A queue's figures from its QueueStats; None throughout (with the reason) without.

    tasks_count counts dispatched tasks awaiting their reply too: depth is the rest. The
    oldest estimated arrival time is the earliest schedule time of a task in the queue: in
    the past, that task waits for a worker; in the future, none does. Retries are not in
    the stats (the console counts those its task handlers saw, application/queue_figures)."""
    if stats is None:
        return QueueFigures(queue, "cloud_tasks", None, None, None, None, [], note=why)
    # proto-plus gives the Timestamp as a datetime (None when the queue is empty).
    arrival: Any = (
        stats.oldest_estimated_arrival_time if "oldest_estimated_arrival_time" in stats else None
    )
    at = arrival.timestamp() if arrival is not None and arrival.timestamp() > 0 else None
    return QueueFigures(
        queue=queue,
        backend="cloud_tasks",
        depth=max(0, stats.tasks_count - stats.concurrent_dispatches_count),
        in_flight=stats.concurrent_dispatches_count,
        retrying=None,
        oldest_due_at=at if at is not None and at <= now else None,
        retries=[],
        executed_last_minute=stats.executed_last_minute_count,
    )


def route(task: Task) -> tuple[str, dict[str, str]]:
    """The path a task calls and its JSON body: the one place task kinds part."""
    if task.state == NOTIFY_STATE:
        return NOTIFY_PATH, {"notice": task.message_id}
    return ADVANCE_PATH, {"message_id": task.message_id, "state": task.state}


def task_id(task: Task) -> str:
    """Cloud Tasks' task id for `task`: the same step of the same record always collides."""
    key = f"{task.message_id}\x00{task.state}\x00{task.generation}"
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class CallbackTarget:
    """Where and how tasks call the service back."""

    base_url: str
    internal_token: str
    service_account: str | None = None  # tasks carry an OIDC token for it when set
    audience: str | None = None
    dispatch_deadline_seconds: int = 60


class CloudTasksQueue:
    """TaskQueue on Cloud Tasks (or its emulator)."""

    def __init__(
        self,
        client: tasks_v2.CloudTasksAsyncClient | Callable[[], tasks_v2.CloudTasksAsyncClient],
        project: str,
        location: str,
        queue_names: Mapping[str, str],
        target: CallbackTarget,
        stats_client: Callable[[], tasks_v2beta3.CloudTasksAsyncClient] | None = None,
    ) -> None:
        """`client` may be a factory: gRPC's asyncio channels belong to the event loop that
        creates them, so the service builds its client on first use, inside its loop (as
        it builds `stats_client`, which reads the queues' statistics; None: it does not)."""
        self._stats_factory = stats_client
        self._stats: tasks_v2beta3.CloudTasksAsyncClient | None = None
        self._client: tasks_v2.CloudTasksAsyncClient | None = None
        self._factory: Callable[[], tasks_v2.CloudTasksAsyncClient] | None = None
        if isinstance(client, tasks_v2.CloudTasksAsyncClient):
            self._client = client
        else:
            self._factory = client
        self.project = project
        self.location = location
        self.queue_names = queue_names
        self.target = target

    @property
    def client(self) -> tasks_v2.CloudTasksAsyncClient:
        """The client, built on first use."""
        if self._client is None:
            assert self._factory is not None
            self._client = self._factory()
        return self._client

    def queue_path(self, queue: str) -> str:
        """Full resource name of the inbound or outbound queue."""
        return tasks_v2.CloudTasksAsyncClient.queue_path(
            self.project, self.location, self.queue_names[queue]
        )

    def build(self, task: Task) -> tasks_v2.Task:
        """The Cloud Tasks task that runs `task`: advances its record from its state, or
        delivers its notice."""
        headers = {"Content-Type": "application/json"}
        if task.traceparent:
            headers["traceparent"] = task.traceparent
        path, body = route(task)
        request = tasks_v2.HttpRequest(
            url=self.target.base_url.rstrip("/") + path,
            http_method=tasks_v2.HttpMethod.POST,
            headers=headers,
            body=json.dumps(body).encode(),
        )
        if self.target.service_account:
            request.oidc_token = tasks_v2.OidcToken(
                service_account_email=self.target.service_account,
                audience=self.target.audience or self.target.base_url,
            )
        else:
            request.headers["X-Internal-Token"] = self.target.internal_token
        built = tasks_v2.Task(
            name=f"{self.queue_path(task.queue)}/tasks/{task_id(task)}",
            http_request=request,
            dispatch_deadline=duration_pb2.Duration(seconds=self.target.dispatch_deadline_seconds),
        )
        if task.not_before > 0:
            # A wake-up (a burst's quiet window): Cloud Tasks dispatches it at that time; its
            # name (the generation names the wake-up) keeps a repeated enqueue one task.
            # https://cloud.google.com/tasks/docs/reference/rpc/google.cloud.tasks.v2#task
            # (schedule_time: "The time when the task is scheduled to be attempted").
            seconds = int(task.not_before)
            nanos = int((task.not_before - seconds) * 1e9)
            built.schedule_time = timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
        return built

    async def enqueue(self, task: Task) -> None:
        """Create the task; one that already exists is the same step, so that is success."""
        try:
            await self.client.create_task(
                parent=self.queue_path(task.queue),
                task=self.build(task),
                timeout=CALL_TIMEOUT_SECONDS,
            )
        except google_errors.AlreadyExists:
            return
        except (google_errors.GoogleAPIError, grpc.RpcError) as error:
            raise QueueUnavailable(f"cloud tasks: {type(error).__name__}") from error

    async def ping(self) -> None:
        """Raise QueueUnavailable unless the inbound queue can be read."""
        try:
            await self.client.get_queue(name=self.queue_path("inbound"), timeout=5.0)
        except (google_errors.GoogleAPIError, grpc.RpcError) as error:
            raise QueueUnavailable(f"cloud tasks: {type(error).__name__}") from error

    async def queue_figures(self, now: float) -> list[QueueFigures]:
        """Each queue's statistics from GetQueue (v2beta3, read mask `stats`): one call per
        queue, no task listed. A queue that does not give them has None figures."""
        return [await self._figures(queue, now) for queue in self.queue_names]

    async def _figures(self, queue: str, now: float) -> QueueFigures:
        if self._stats_factory is None:
            return figures_of(queue, None, now)
        if self._stats is None:
            self._stats = self._stats_factory()
        try:
            found = await self._stats.get_queue(
                request=tasks_v2beta3.GetQueueRequest(
                    name=self.queue_path(queue),
                    read_mask=field_mask_pb2.FieldMask(paths=list(STATS_MASK)),
                ),
                timeout=5.0,
            )
        except google_errors.MethodNotImplemented:
            return figures_of(queue, None, now, NO_V2BETA3)
        except (google_errors.GoogleAPIError, grpc.RpcError) as error:
            return figures_of(queue, None, now, f"{NO_STATS}: GetQueue {type(error).__name__}")
        return figures_of(queue, found.stats if "stats" in found else None, now)

    async def close(self) -> None:
        """Close the gRPC channels, if they were opened."""
        if self._client is not None:
            await self._client.transport.close()  # type: ignore[no-untyped-call]
            self._client = None
        if self._stats is not None:
            await self._stats.transport.close()  # type: ignore[no-untyped-call]
            self._stats = None


def queue_config(name: str, spec: QueueSpec) -> tasks_v2.Queue:
    """The Cloud Tasks queue for a spec: rates, concurrency, attempts and backoff."""
    return tasks_v2.Queue(
        name=name,
        rate_limits=tasks_v2.RateLimits(
            max_dispatches_per_second=spec.rate_per_second,
            max_concurrent_dispatches=spec.max_concurrent,
        ),
        retry_config=tasks_v2.RetryConfig(
            max_attempts=spec.max_attempts,
            min_backoff=duration_pb2.Duration(seconds=int(spec.min_backoff_seconds)),
            max_backoff=duration_pb2.Duration(seconds=int(spec.max_backoff_seconds)),
        ),
    )


_COMPARED: dict[str, Callable[[tasks_v2.Queue], object]] = {
    "rate_limits.max_dispatches_per_second": lambda q: q.rate_limits.max_dispatches_per_second,
    "rate_limits.max_concurrent_dispatches": lambda q: q.rate_limits.max_concurrent_dispatches,
    "retry_config.max_attempts": lambda q: q.retry_config.max_attempts,
    "retry_config.min_backoff": lambda q: _seconds(q.retry_config.min_backoff),
    "retry_config.max_backoff": lambda q: _seconds(q.retry_config.max_backoff),
}


def _seconds(value: object) -> float:
    if hasattr(value, "total_seconds"):
        return float(value.total_seconds())
    return float(getattr(value, "seconds", 0))


def differences(
    current: tasks_v2.Queue, wanted: tasks_v2.Queue
) -> dict[str, tuple[object, object]]:
    """Fields whose value differs: field path → (current, wanted)."""
    changed: dict[str, tuple[object, object]] = {}
    for path, read in _COMPARED.items():
        before, after = read(current), read(wanted)
        if before != after:
            changed[path] = (before, after)
    return changed


async def ensure_queues(
    client: tasks_v2.CloudTasksAsyncClient,
    parent: str,
    wanted: Mapping[str, QueueSpec],
    dry_run: bool,
) -> list[str]:
    """Create each queue (name → spec) or update what differs; one line per queue saying
    what changed (or would). Existing queues are listed, not fetched one by one, so a
    missing queue is never confused with another error."""
    pager = await client.list_queues(parent=parent, timeout=CALL_TIMEOUT_SECONDS)
    existing = {queue.name: queue async for queue in pager}
    lines = []
    for name, spec in wanted.items():
        config = queue_config(name, spec)
        short = name.rsplit("/", 1)[-1]
        current = existing.get(name)
        if current is None:
            if not dry_run:
                await client.create_queue(parent=parent, queue=config, timeout=CALL_TIMEOUT_SECONDS)
            lines.append(f"{'would create' if dry_run else 'created'} {short}: {_describe(spec)}")
            continue
        changed = differences(current, config)
        if not changed:
            lines.append(f"unchanged {short}")
            continue
        if not dry_run:
            mask = field_mask_pb2.FieldMask(paths=sorted(changed))
            await client.update_queue(queue=config, update_mask=mask, timeout=CALL_TIMEOUT_SECONDS)
        details = ", ".join(f"{path} {a} → {b}" for path, (a, b) in sorted(changed.items()))
        lines.append(f"{'would update' if dry_run else 'updated'} {short}: {details}")
    return lines


def _describe(spec: QueueSpec) -> str:
    return (
        f"{spec.rate_per_second:g}/s, {spec.max_concurrent} concurrent, "
        f"{spec.max_attempts} attempts, backoff {spec.min_backoff_seconds:g}-"
        f"{spec.max_backoff_seconds:g} s"
    )
