"""The Cloud Tasks adapter against gcloud-tasks-emulator, and the tasks it builds."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import pytest
from google.cloud import tasks_v2

from pyloto_corp.adapters.cloud_tasks import (
    CallbackTarget,
    CloudTasksQueue,
    create_client,
    ensure_queues,
    task_id,
)
from pyloto_corp.application.advance import wake_up
from pyloto_corp.application.ports import QueueUnavailable, Task
from pyloto_corp.application.queues import INBOUND, OUTBOUND
from pyloto_corp.cli import main
from tests.support.redis_server import free_port
from tests.support.tasks_emulator import TasksEmulator

pytestmark = pytest.mark.anyio

PROJECT, LOCATION = "pyloto-test", "southamerica-east1"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TasksEmulator]:
    """One emulator for this module; its tasks go to a port nobody listens on."""
    running = TasksEmulator(free_port(), tmp_path_factory.mktemp("emulator") / "emulator.log")
    running.start()
    yield running
    running.stop()


@pytest.fixture
async def client(emulator: TasksEmulator) -> AsyncIterator[tasks_v2.CloudTasksAsyncClient]:
    """The project's real async client on an insecure channel to the emulator."""
    built = create_client(emulator.host)
    yield built
    await built.transport.close()  # type: ignore[no-untyped-call]


def _wanted(client: tasks_v2.CloudTasksAsyncClient, project: str) -> dict[str, object]:
    return {
        client.queue_path(project, LOCATION, "whatsapp-inbound"): INBOUND,
        client.queue_path(project, LOCATION, "whatsapp-outbound"): OUTBOUND,
    }


async def test_ensure_creates_then_changes_nothing(
    client: tasks_v2.CloudTasksAsyncClient,
) -> None:
    """A dry run creates nothing; the first run creates both queues with the deploy guide's
    settings; the second run finds them as wanted and changes nothing."""
    project = "ensure-project"
    parent = client.common_location_path(project, LOCATION)
    wanted = _wanted(client, project)
    dry = await ensure_queues(client, parent, wanted, dry_run=True)  # type: ignore[arg-type]
    assert dry == [
        "would create whatsapp-inbound: 50/s, 50 concurrent, 10 attempts, backoff 5-600 s",
        "would create whatsapp-outbound: 10/s, 10 concurrent, 8 attempts, backoff 5-600 s",
    ]
    assert [q async for q in await client.list_queues(parent=parent)] == []
    created = await ensure_queues(client, parent, wanted, dry_run=False)  # type: ignore[arg-type]
    assert [line.split(":")[0] for line in created] == [
        "created whatsapp-inbound",
        "created whatsapp-outbound",
    ]
    stored = {q.name.rsplit("/", 1)[-1]: q async for q in await client.list_queues(parent=parent)}
    assert stored["whatsapp-inbound"].rate_limits.max_dispatches_per_second == 50
    assert stored["whatsapp-outbound"].rate_limits.max_concurrent_dispatches == 10
    assert stored["whatsapp-outbound"].retry_config.max_attempts == 8
    again = await ensure_queues(client, parent, wanted, dry_run=False)  # type: ignore[arg-type]
    assert again == ["unchanged whatsapp-inbound", "unchanged whatsapp-outbound"]


def test_queues_ensure_command_prints_what_changed(
    emulator: TasksEmulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`pyloto queues ensure` creates the queues through the API, then reports them unchanged."""
    monkeypatch.setenv("GCP_PROJECT", "cli-project")
    monkeypatch.setenv("GCP_LOCATION", LOCATION)
    monkeypatch.setenv("CLOUD_TASKS_EMULATOR_HOST", emulator.host)
    assert main(["queues", "ensure", "--dry-run"]) == 0
    assert "would create whatsapp-inbound" in capsys.readouterr().out
    assert main(["queues", "ensure"]) == 0
    assert "created whatsapp-outbound" in capsys.readouterr().out
    assert main(["queues", "ensure"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "unchanged whatsapp-inbound",
        "unchanged whatsapp-outbound",
    ]


def test_queues_ensure_without_a_project_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without GCP_PROJECT the command exits 2 and says which variable to set."""
    monkeypatch.delenv("GCP_PROJECT", raising=False)
    assert main(["queues", "ensure"]) == 2
    assert "GCP_PROJECT" in capsys.readouterr().err


def _queue(client: tasks_v2.CloudTasksAsyncClient, **target: object) -> CloudTasksQueue:
    callback = CallbackTarget(
        base_url="https://pyloto.example.run.app",
        internal_token="task-token",
        **target,  # type: ignore[arg-type]
    )
    names = {"inbound": "whatsapp-inbound", "outbound": "whatsapp-outbound"}
    return CloudTasksQueue(client, PROJECT, LOCATION, names, callback)


async def test_a_wake_up_is_scheduled_for_its_time_under_a_name_of_its_own(
    client: tasks_v2.CloudTasksAsyncClient,
) -> None:
    """A burst's wake-up carries its time as the task's schedule time; the same wake-up
    built twice has one name, another wake-up of the same step another."""
    queue = _queue(client)
    task = Task("wamid.ABC", "buffered", "inbound")
    first = queue.build(wake_up(task, 1_800_000_000.25))
    assert first.schedule_time.timestamp() == pytest.approx(1_800_000_000.25)
    assert queue.build(wake_up(task, 1_800_000_000.25)).name == first.name
    assert queue.build(wake_up(task, 1_800_000_003.0)).name != first.name
    assert not queue.build(task).schedule_time, "a task for now has no schedule time"


async def test_task_is_an_authenticated_post_to_the_advance_route(
    client: tasks_v2.CloudTasksAsyncClient,
) -> None:
    """The task POSTs {message_id, state} as JSON to the callback URL with the internal token,
    the trace header and a dispatch deadline, on the state's queue, under a hashed name."""
    queue = _queue(client, dispatch_deadline_seconds=45)
    task = Task("wamid.ABC", "queued_outbound", "outbound", traceparent="00-abc-def-01")
    built = queue.build(task)
    request = built.http_request
    assert request.url == "https://pyloto.example.run.app/internal/tasks/advance"
    assert request.http_method == tasks_v2.HttpMethod.POST
    assert json.loads(request.body) == {"message_id": "wamid.ABC", "state": "queued_outbound"}
    assert request.headers["X-Internal-Token"] == "task-token"
    assert request.headers["traceparent"] == "00-abc-def-01"
    assert request.headers["Content-Type"] == "application/json"
    assert built.dispatch_deadline.total_seconds() == 45
    assert built.name.startswith(client.queue_path(PROJECT, LOCATION, "whatsapp-outbound"))
    assert "wamid" not in built.name, "the name never carries the message id itself"


async def test_same_step_same_name_other_step_or_sweep_another(
    client: tasks_v2.CloudTasksAsyncClient,
) -> None:
    """A second enqueue of one step has the same name (Cloud Tasks refuses it); another step
    or a sweeper re-queue of the same step gets a different name."""
    first = task_id(Task("wamid.A", "deduped", "inbound"))
    assert task_id(Task("wamid.A", "deduped", "inbound")) == first
    assert task_id(Task("wamid.A", "llm1", "inbound")) != first
    assert task_id(Task("wamid.A", "deduped", "inbound", generation="sweep-1")) != first
    assert task_id(Task("wamid.B", "deduped", "inbound")) != first


async def test_with_a_service_account_tasks_carry_oidc_instead_of_the_token(
    client: tasks_v2.CloudTasksAsyncClient,
) -> None:
    """With a service account the shared token is not sent; an OIDC token for the audience is."""
    queue = _queue(
        client,
        service_account="tasks@pyloto-test.iam.gserviceaccount.com",
        audience="https://pyloto.example.run.app",
    )
    request = queue.build(Task("wamid.O", "deduped", "inbound")).http_request
    assert "X-Internal-Token" not in request.headers
    assert request.oidc_token.service_account_email == "tasks@pyloto-test.iam.gserviceaccount.com"
    assert request.oidc_token.audience == "https://pyloto.example.run.app"


async def test_enqueue_reaches_the_emulator_and_a_missing_queue_is_unavailable(
    client: tasks_v2.CloudTasksAsyncClient,
) -> None:
    """Enqueue creates the task on the state's queue; without the queue it raises
    QueueUnavailable (the webhook then answers 503) instead of a raw gRPC error."""
    project = "enqueue-project"
    parent = client.common_location_path(project, LOCATION)
    queue = _queue(client)
    queue.project = project
    with pytest.raises(QueueUnavailable):
        await queue.enqueue(Task("wamid.Q", "received", "inbound"))
    await ensure_queues(client, parent, _wanted(client, project), dry_run=False)  # type: ignore[arg-type]
    inbound = client.queue_path(project, LOCATION, "whatsapp-inbound")
    await client.pause_queue(name=inbound)  # keep the task where the test can see it
    await queue.enqueue(Task("wamid.Q", "received", "inbound"))
    tasks = [t async for t in await client.list_tasks(parent=inbound)]
    assert [t.name.rsplit("/", 1)[-1] for t in tasks] == [
        task_id(Task("wamid.Q", "received", "inbound"))
    ]
    await queue.ping()
