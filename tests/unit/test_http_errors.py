"""An unexpected error answers 500 without putting the request path in the log."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import pytest
from litestar.testing import AsyncTestClient

from pyloto_corp.bootstrap import bootstrap
from pyloto_corp.config import Settings
from pyloto_corp.domain.records import Record
from pyloto_corp.http.app import create_app
from pyloto_corp.observability.logging import JsonFormatter
from tests.support.helpers import INTERNAL_TOKEN
from tests.unit.fakes import FakeOutbox, FakeStore

pytestmark = pytest.mark.anyio

# A wamid as Meta sends them: base64 that encodes the sender's number (5511987654321).
WAMID = "wamid.HBgNNTUxMTk4NzY1NDMyMRUCABIYFjNFQjBDMkQ3Q0I1NDk1OUQwNjk0QTkA"


class BrokenStore(FakeStore):
    """A store with a bug: reading a record raises."""

    async def get(self, message_id: str) -> Record | None:
        raise RuntimeError("a bug in the store")


async def test_unhandled_errors_log_the_route_not_the_path(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    """The 500's log line names the route template; the wamid in the path never appears."""
    app = create_app(bootstrap(make_settings(), store=BrokenStore(), outbox=FakeOutbox()))
    with caplog.at_level(logging.ERROR, logger="pyloto_corp"):
        async with AsyncTestClient(app=app) as client:
            response = await client.get(
                f"/internal/messages/{WAMID}", headers={"X-Internal-Token": INTERNAL_TOKEN}
            )
    assert response.status_code == 500
    lines = [JsonFormatter().format(r) for r in caplog.records if r.name.startswith("pyloto")]
    routes = [json.loads(line).get("route") for line in lines]
    assert "/internal/messages/{message_id}" in routes, [line[:300] for line in lines]
    assert not any(WAMID in line or "HBgN" in line for line in lines)
