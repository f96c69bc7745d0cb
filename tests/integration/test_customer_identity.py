"""One customer, one key: their memory follows their BSUID whichever ids a message shows.

Each message goes through ingest and every task through the Advancer wired by bootstrap, on
SQLite and on a real redis-server; the outbox is the in-memory stand-in of pyloto's port and
the LLM a scripted Assistant that keeps the history LLM#2 was shown.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pyloto_corp.adapters.whatsapp_webhook import parse_webhook
from pyloto_corp.application.step_context import LLMRouting
from pyloto_corp.bootstrap import Container, bootstrap
from pyloto_corp.config import Settings
from tests.integration.test_redis_round_trips import ScriptedAssistant
from tests.support.helpers import BSUID, SENDER, customer_webhook, encode, user_id_changed
from tests.support.redis_server import RedisServer
from tests.unit.fakes import FakeOutbox, FakeQueue

pytestmark = pytest.mark.anyio

NEW_BSUID = "BR.8712093345510278"


class Pipeline:
    """A bootstrapped service on one backend, fed webhooks one at a time."""

    def __init__(self, settings: Settings) -> None:
        self.queue = FakeQueue()
        self.outbox = FakeOutbox()
        self.assistant = ScriptedAssistant()
        self.container: Container = bootstrap(
            settings, outbox=self.outbox, queue=self.queue, assistant=LLMRouting(self.assistant)
        )

    async def deliver(self, payload: dict[str, Any]) -> None:
        """Ingest one webhook and run its tasks until none is left."""
        await self.container.ingestor.ingest(parse_webhook(encode(payload)))
        while self.queue.tasks:
            task = self.queue.tasks.pop(0)
            await self.container.advancer.deliver(task.message_id, task.state, 1, 10)

    def last_history(self) -> list[tuple[str, str]]:
        """What LLM#2 was shown for the last message: (role, text) of each turn."""
        return [(turn.role, turn.text) for turn in self.assistant.histories[-1]]


@pytest.fixture(params=["sqlite", "redis"])
async def pipeline(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings], redis_prefix: str
) -> Any:
    """The pipeline on each store backend."""
    if request.param == "redis":
        redis: RedisServer = request.getfixturevalue("private_redis")
        settings = make_settings(
            STATE_BACKEND="redis", REDIS_URL=redis.url, REDIS_KEY_PREFIX=redis_prefix
        )
    else:
        settings = make_settings()
    running = Pipeline(settings)
    yield running
    await running.container.stop()


async def test_a_customer_who_hides_the_number_keeps_one_memory(pipeline: Pipeline) -> None:
    """Written first with number and BSUID, then with the BSUID alone (a username adopted):
    LLM#2 sees the first exchange, and each reply names the customer as it can: `to` with
    the number, then `recipient` with the BSUID, never both."""
    await pipeline.deliver(customer_webhook("Oi, quanto custa o corte?"))
    await pipeline.deliver(customer_webhook("E a barba?", phone=None, username="maria.corte"))

    assert pipeline.last_history() == [
        ("customer", "Oi, quanto custa o corte?"),
        ("business", "O corte custa R$ 50."),
    ]
    first, second = pipeline.outbox.sent
    assert (first["to"], "recipient" in first) == (SENDER, False)
    assert (second["recipient"], "to" in second) == (BSUID, False)


async def test_memory_kept_under_the_number_moves_to_the_bsuid(pipeline: Pipeline) -> None:
    """A customer remembered under their number (before BSUIDs) who writes with number and
    BSUID keeps that memory, and then again with the BSUID alone."""
    await pipeline.deliver(customer_webhook("Oi, quanto custa o corte?", user_id=None))
    await pipeline.deliver(customer_webhook("E a barba?"))
    assert pipeline.last_history()[0] == ("customer", "Oi, quanto custa o corte?")

    await pipeline.deliver(customer_webhook("Tem horário amanhã?", phone=None))
    assert [text for _, text in pipeline.last_history()][::2] == [
        "Oi, quanto custa o corte?",
        "E a barba?",
    ]


@pytest.mark.parametrize("shape", ["system", "user_id_update"])
async def test_a_changed_bsuid_moves_the_customer(pipeline: Pipeline, shape: str) -> None:
    """After a BSUID change (as a system message or a `user_id_update` item), the customer's
    next message under the new BSUID sees the memory of the old one."""
    await pipeline.deliver(customer_webhook("Oi, quanto custa o corte?", phone=None))
    await pipeline.deliver(user_id_changed(BSUID, NEW_BSUID, shape))
    await pipeline.deliver(customer_webhook("E a barba?", phone=None, user_id=NEW_BSUID))

    assert pipeline.last_history()[0] == ("customer", "Oi, quanto custa o corte?")
    assert pipeline.outbox.sent[-1]["recipient"] == NEW_BSUID
