"""The Queues page of `pyloto serve` on Redis with Cloud Tasks (the emulator): a send whose
first attempt Meta refused for now shows as a retry while its second attempt runs, from the
task's X-CloudTasks-TaskRetryCount; the emulator gives no queue statistics, so those read
null (never 0); the serving instance is listed live."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from pyloto_corp.adapters.cloud_tasks import NO_V2BETA3
from pyloto_corp.config import Settings
from pyloto_corp.domain.privacy import message_ref
from tests.e2e.servers import ServeProcess, post_webhook, process_env, redis_variables
from tests.e2e.test_cloud_tasks_e2e import LOCATION, PROJECT, emulator
from tests.support.accounts import ensure_account, post_sign_in
from tests.support.fake_graph import PHONE_NUMBER_ID, FakeGraph, Fault
from tests.support.fake_graph import TOKEN as GRAPH_TOKEN
from tests.support.helpers import SENDER, envelope, realistic_wamid, text_message
from tests.support.redis_server import RedisServer, free_port
from tests.support.tasks_emulator import TasksEmulator

pytestmark = pytest.mark.slow

__all__ = ["emulator"]  # the fixture: a fresh emulator with both queues


def _queues(client: httpx.Client, holds: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """GET /ops/api/queues until `holds(data)` (a deadlock guard, not a timing)."""
    deadline = time.monotonic() + 60
    while True:
        response = client.get("/ops/api/queues")
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        if holds(data) or time.monotonic() > deadline:
            return data
        time.sleep(0.05)


def _outbound(data: dict[str, Any]) -> dict[str, Any]:
    (found,) = [q for q in data["queues"] if q["queue"] == "outbound"]
    return found


def test_a_retry_running_on_cloud_tasks_shows_on_the_queues_page(
    tmp_path: Path,
    redis_server: RedisServer,
    redis_prefix: str,
    emulator: TasksEmulator,
    graph: FakeGraph,
    make_settings: Callable[..., Settings],
) -> None:
    port = free_port()
    variables = redis_variables(
        redis_server.url,
        redis_prefix,
        tmp_path,
        QUEUE_BACKEND="cloud_tasks",
        GCP_PROJECT=PROJECT,
        GCP_LOCATION=LOCATION,
        CLOUD_TASKS_EMULATOR_HOST=emulator.host,
        INTERNAL_TASK_BASE_URL=f"http://127.0.0.1:{port}",
        OPS_CONSOLE_ENABLED="true",
        WHATSAPP_ACCESS_TOKEN=GRAPH_TOKEN,
        WHATSAPP_PHONE_NUMBER_ID=PHONE_NUMBER_ID,
        WHATSAPP_API_BASE_URL=graph.base_url,
    )
    server = ServeProcess(process_env(variables), tmp_path / "serve.log")
    server.port, server.url = port, f"http://127.0.0.1:{port}"
    settings = make_settings(
        STATE_BACKEND="redis", REDIS_URL=redis_server.url, REDIS_KEY_PREFIX=redis_prefix
    )
    asyncio.run(ensure_account(settings))
    second = threading.Event()
    graph.inject(Fault(code=130429), Fault(hold=second))  # refused for now, then held
    try:
        server.start()
        with httpx.Client(base_url=server.url, timeout=10) as client:
            signed = asyncio.run(_sign_in(server.url))
            client.cookies.update(signed)
            wamid = realistic_wamid(SENDER)
            answer = post_webhook(client, server.url, envelope([text_message("Olá", wamid)]))
            assert answer.status_code == 200
            data = _queues(client, lambda d: bool(_outbound(d)["retrying"]))
            out = _outbound(data)
            (retry,) = out["retries"]
            assert retry["ref"] == message_ref(wamid)
            assert retry["attempt"] == 2
            assert retry["next_at"] is None  # Cloud Tasks does not say
            assert retry["seen_at"] is not None
            assert (out["backend"], out["depth"], out["in_flight"]) == ("cloud_tasks", None, None)
            assert out["note"].startswith(NO_V2BETA3)
            (me,) = data["instances"]
            assert (me["status"], me["this"]) == ("live", True)
            page = client.get("/ops/queues").text
            assert "not available on Cloud Tasks" in page
            assert message_ref(wamid) in page
            assert wamid not in page
            assert SENDER not in page
            second.set()  # the second attempt's send is answered: the retry is over
            done = _queues(client, lambda d: not _outbound(d)["retrying"])
            assert _outbound(done)["retrying"] == 0
    finally:
        second.set()
        server.stop()


async def _sign_in(url: str) -> httpx.Cookies:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        response = await post_sign_in(client)
        assert response.status_code == 303, response.text
        return client.cookies
