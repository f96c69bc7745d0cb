"""A thin driver over the app under test: signed posts, polling for states, the outbox, the DB.

Everything goes through HTTP except what only the process can see: the dry-run outbox and
the rows of the SQLite file (to prove that something was *not* stored).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.to_thread
import httpx
import pytest
from litestar.testing import AsyncTestClient
from pydantic import BaseModel

from pyloto_corp.adapters.dry_run_outbox import DryRunOutbox
from pyloto_corp.bootstrap import Container
from pyloto_corp.cli import message_url
from pyloto_corp.config import Settings
from tests.support.helpers import (
    APP_SECRET,
    INTERNAL_TOKEN,
    VERIFY_TOKEN,
    encode,
    signed_headers,
)

TERMINAL = frozenset({"sent", "failed", "ignored", "with_agent"})
WAIT_SECONDS = 15.0
# The states a text message passes through on the template reply and on the LLM steps.
FALLBACK_PATH = ["received", "deduped", "fallback", "queued_outbound", "sending", "sent"]
LLM_PATH = ["received", "deduped", "llm1", "llm2", "llm3", "queued_outbound", "sending", "sent"]

Payload = dict[str, Any] | list[Any] | bytes


def _settings_variables() -> frozenset[str]:
    names: set[str] = set()
    for section in Settings.model_fields.values():
        model = section.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            names.update(info.alias for info in model.model_fields.values() if info.alias)
    return frozenset(names)


# Every environment variable pyloto reads (so a test can start from a clean environment).
SETTINGS_VARIABLES = _settings_variables()


def isolate_cli_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, work: str, **extra: str
) -> dict[str, str]:
    """Leave only the test's pyloto variables in the process environment (a SQLite file under
    `tmp_path`, the test secrets, quick retries, then `extra`) and make `tmp_path / work` the
    working directory, so the CLI reads nothing of the machine's. Returns the variables."""
    for name in SETTINGS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    variables = {
        "STATE_SQLITE_PATH": str(tmp_path / "state" / "pyloto.db"),
        "WHATSAPP_APP_SECRET": APP_SECRET,
        "WHATSAPP_VERIFY_TOKEN": VERIFY_TOKEN,
        "INTERNAL_TASK_TOKEN": INTERNAL_TOKEN,
        "LOCAL_QUEUE_MIN_BACKOFF_SECONDS": "0.05",
        "LOCAL_QUEUE_MAX_BACKOFF_SECONDS": "0.5",
        **extra,
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    directory = tmp_path / work
    directory.mkdir()
    monkeypatch.chdir(directory)
    return variables


def as_bytes(payload: Payload) -> bytes:
    """Raw bytes as they would go on the wire (dicts serialised like Meta does)."""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, dict):
        return encode(payload)
    return json.dumps(payload, ensure_ascii=False).encode()


def read_rows(database: Path, query: str) -> list[tuple[Any, ...]]:
    """Rows of `query` on the service's SQLite file (empty if the table does not exist yet)."""
    if not database.exists():
        return []
    with sqlite3.connect(database) as conn:
        try:
            return list(conn.execute(query).fetchall())
        except sqlite3.OperationalError as error:
            if "no such table" in str(error):
                return []
            raise


class Pyloto:
    """The running service, seen from a test."""

    def __init__(self, client: AsyncTestClient) -> None:  # type: ignore[type-arg]
        self.client = client

    @property
    def container(self) -> Container:
        """The container the app was built with (app.state.container)."""
        container: Container = self.client.app.state.container
        return container

    @property
    def outbox(self) -> DryRunOutbox:
        """The dry-run outbox of the embedded defaults."""
        outbox = self.container.outbox
        assert isinstance(outbox, DryRunOutbox)
        return outbox

    @property
    def database(self) -> Path:
        """The SQLite file the service writes."""
        return self.container.settings.state.sqlite_path

    async def post(
        self, payload: Payload, *, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        """POST /webhook with the payload's raw bytes, signed over those bytes unless given."""
        body = as_bytes(payload)
        return await self.client.post(
            "/webhook",
            content=body,
            headers=headers if headers is not None else signed_headers(body),
        )

    async def get_view(self, message_id: str) -> httpx.Response:
        """GET /internal/messages/{id} with the right token."""
        return await self.client.get(
            message_url("", message_id), headers={"X-Internal-Token": INTERNAL_TOKEN}
        )

    async def view(self, message_id: str) -> dict[str, Any]:
        """The masked record view; the record must exist."""
        response = await self.get_view(message_id)
        assert response.status_code == 200, response.text
        return cast(dict[str, Any], response.json())

    async def wait_for(
        self, message_id: str, states: Collection[str] = TERMINAL, seconds: float = WAIT_SECONDS
    ) -> dict[str, Any]:
        """Poll the record until it is in one of `states` (fails after `seconds`)."""
        view: dict[str, Any] = {}
        with anyio.fail_after(seconds):
            while True:
                response = await self.get_view(message_id)
                if response.status_code == 200:
                    view = response.json()
                    if view["state"] in states:
                        return view
                await anyio.sleep(0.01)

    async def wait_idle(self, seconds: float = WAIT_SECONDS) -> None:
        """Wait until no task is waiting, delayed or running."""
        with anyio.fail_after(seconds):
            while True:
                if self.container.queue.idle():
                    return
                await anyio.sleep(0.01)

    async def sent_for(self, message_id: str) -> list[dict[str, Any]]:
        """Graph API bodies the outbox recorded for one inbound message."""
        return await self.outbox.sent(message_id=message_id)

    async def records(self) -> dict[str, str]:
        """message_id → state of every stored record, read from the database file."""
        rows = await anyio.to_thread.run_sync(
            read_rows, self.database, "SELECT message_id, state FROM records"
        )
        return {str(message_id): str(state) for message_id, state in rows}

    async def outbox_count(self) -> int:
        """Rows in the dry-run outbox table."""
        rows = await anyio.to_thread.run_sync(
            read_rows, self.database, "SELECT COUNT(*) FROM dry_run_outbox"
        )
        return int(rows[0][0]) if rows else 0


def not_the_test_client(record: logging.LogRecord) -> bool:
    """False for the log records of the HTTP client libraries (httpx, httpcore): the test's own
    client logs the URLs it calls, and those lines are the test's, not the service's."""
    return record.name.split(".")[0] not in {"httpx", "httpcore"}


def message_view(http: httpx.Client, base_url: str, message_id: str) -> dict[str, Any]:
    """GET /internal/messages/{id} on `base_url` (the client carries the token)."""
    quoted = urllib.parse.quote(message_id, safe="")
    response = http.get(f"{base_url}/internal/messages/{quoted}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def wait_in_state(
    read: Callable[[], dict[str, Any]], states: tuple[str, ...], seconds: float
) -> dict[str, Any]:
    """`read()` (a record's view) once its state is one of `states`; fails after `seconds`
    (a record not found yet counts as in no state)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            view = read()
        except AssertionError:
            view = {"state": None}
        if view["state"] in states:
            return view
        assert time.monotonic() < deadline, f"still {view['state']}, not in {states}"
        time.sleep(0.05)


def trajectory(view: dict[str, Any]) -> list[str]:
    """The states a record went through, from its history."""
    history = view["history"]
    if not history:
        return [view["state"]]
    return [history[0]["from"], *(step["to"] for step in history)]


def message_ids(payload: dict[str, Any]) -> list[str]:
    """Inbound message ids of an envelope, in order (repeats kept)."""
    return [
        message["id"]
        for entry in payload["entry"]
        for change in entry["changes"]
        if change.get("field") == "messages"
        for message in change["value"].get("messages", [])
    ]
