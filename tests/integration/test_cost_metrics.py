"""The cost metrics as Cloud Monitoring would receive them (the SDK built from otel.yaml,
an in-memory reader): billable messages by pricing category, once per outbound message, and
LLM tokens by step and kind, equal to what the records kept."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from litestar.testing import AsyncTestClient

from pyloto_corp.bootstrap import bootstrap
from pyloto_corp.config import Settings
from pyloto_corp.devtools.fake_openai import FakeOpenAI
from pyloto_corp.http.app import create_app
from tests.e2e.support import Pyloto
from tests.support.helpers import envelope, status, text_message
from tests.support.telemetry_capture import HASH_KEY, Captured

pytestmark = pytest.mark.anyio

PRICING = {"billable": True, "category": "service", "pricing_model": "PMP", "type": "regular"}


async def test_billable_messages_and_tokens_are_counted_on_their_metrics(
    make_settings: Callable[..., Settings], fake_openai: FakeOpenAI, captured: Captured
) -> None:
    """A reply whose three statuses repeat its pricing counts one billable `service`
    message; a status saying it is free counts none; each LLM step's input and output tokens
    are on `pyloto.llm.tokens`, as many as its record kept."""
    settings = make_settings(
        PRIVACY_HASH_KEY=HASH_KEY,
        OPENAI_API_KEY="sk-test",
        OPENAI_BASE_URL=fake_openai.base_url,
        OPENAI_MAX_RETRIES="0",
    )
    container = bootstrap(settings, telemetry=captured.runtime)
    now = int(time.time())
    async with AsyncTestClient(app=create_app(container)) as client:
        app = Pyloto(client)
        message = text_message("Qual o valor do frete?")
        assert (await app.post(envelope([message]))).status_code == 200
        view = await app.wait_for(message["id"], {"sent"})
        outbound = view["outbound_message_id"]
        for n, state in enumerate(("sent", "delivered", "read")):
            item = status(outbound, state, now + n) | {"pricing": PRICING}
            assert (await app.post(envelope(statuses=[item]))).status_code == 200
        free = {**PRICING, "billable": False}
        item = status("wamid.OUT.FREE", "sent", now) | {"pricing": free}
        assert (await app.post(envelope(statuses=[item]))).status_code == 200
        await app.wait_idle()

    assert captured.points("pyloto.whatsapp.billable") == {
        (("pyloto.whatsapp.pricing_category", "service"),): 1
    }
    expected = {}
    for step in ("llm1", "llm2", "llm3"):
        call = view["results"][step]
        for kind in ("input", "output"):
            if call[f"{kind}_tokens"]:
                key = (("pyloto.llm.step", step), ("pyloto.llm.token_kind", kind))
                expected[key] = call[f"{kind}_tokens"]
    assert expected, "the fake OpenAI server counts tokens"
    assert captured.points("pyloto.llm.tokens") == expected
