"""The Queues page's figures on Cloud Tasks, against gcloud-tasks-emulator: the queue
statistics are read with GetQueue (v2beta3, read mask `stats`); the emulator serves v2 only,
so every figure it cannot give is None with the reason, never a 0, and the queue still
takes tasks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from google.cloud import tasks_v2

from pyloto_corp.adapters.cloud_tasks import (
    NO_STATS,
    NO_V2BETA3,
    CallbackTarget,
    CloudTasksQueue,
    create_client,
    create_stats_client,
    ensure_queues,
)
from pyloto_corp.application.ports import Task
from pyloto_corp.application.queues import INBOUND, OUTBOUND
from tests.integration.test_cloud_tasks import emulator
from tests.support.tasks_emulator import TasksEmulator

pytestmark = pytest.mark.anyio

PROJECT, LOCATION = "figures-project", "southamerica-east1"
NAMES = {"inbound": "whatsapp-inbound", "outbound": "whatsapp-outbound"}
__all__ = ["emulator"]  # the fixture: one emulator for the module


@pytest.fixture
async def queue(emulator: TasksEmulator) -> AsyncIterator[CloudTasksQueue]:
    """The adapter as bootstrap builds it, on the emulator, with both queues created."""
    client = create_client(emulator.host)
    parent = client.common_location_path(PROJECT, LOCATION)
    wanted = {client.queue_path(PROJECT, LOCATION, NAMES[s.name]): s for s in (INBOUND, OUTBOUND)}
    await ensure_queues(client, parent, wanted, dry_run=False)
    target = CallbackTarget(base_url="https://pyloto.example.run.app", internal_token="t")
    built = CloudTasksQueue(
        client,
        PROJECT,
        LOCATION,
        NAMES,
        target,
        stats_client=lambda: create_stats_client(emulator.host),
    )
    yield built
    await built.close()


async def test_the_emulator_gives_no_statistics_and_no_figure_is_made_up(
    queue: CloudTasksQueue,
) -> None:
    await queue.enqueue(Task("wamid.FIGURES1", "llm1", "inbound", not_before=4_000_000_000.0))
    found = await queue.queue_figures(1_800_000_000.0)
    assert [f.queue for f in found] == ["inbound", "outbound"]
    for figures in found:
        assert figures.backend == "cloud_tasks"
        assert figures.depth is None
        assert figures.in_flight is None
        assert figures.oldest_due_at is None
        assert figures.executed_last_minute is None
        assert figures.retrying is None  # the console fills it from the handlers' headers
        assert figures.note == NO_V2BETA3  # UNIMPLEMENTED: the emulator serves v2 alone
    # The v2 client (the tasks) still works beside the failed statistics call.
    listed = await queue.client.list_tasks(parent=queue.queue_path("inbound"))
    assert len([t async for t in listed]) == 1
    assert isinstance(queue.client, tasks_v2.CloudTasksAsyncClient)


async def test_without_a_statistics_client_the_figures_say_so(emulator: TasksEmulator) -> None:
    target = CallbackTarget(base_url="https://pyloto.example.run.app", internal_token="t")
    client = create_client(emulator.host)
    plain = CloudTasksQueue(client, PROJECT, LOCATION, NAMES, target)
    try:
        found = await plain.queue_figures(1_800_000_000.0)
    finally:
        await plain.close()
    assert [(f.depth, f.note) for f in found] == [(None, NO_STATS), (None, NO_STATS)]
