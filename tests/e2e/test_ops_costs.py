"""What the line costs, on the real app (SQLite and Redis, local queue, dry-run outbox, the
LLM on the fake OpenAI server): status webhooks' pricing counted once per outbound message,
the LLM steps' tokens per day, the console's Cost page and a conversation's cost card, all
without personal data; a status whose pricing cannot be read is still answered 200."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from html import unescape
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from pyloto_corp.application.accounts import AGENT
from pyloto_corp.bootstrap import bootstrap
from pyloto_corp.config import Settings
from pyloto_corp.devtools.fake_openai import FakeOpenAI
from pyloto_corp.http.app import create_app
from pyloto_corp.observability.pii_scan import scan_lines
from tests.e2e.support import Pyloto
from tests.support.accounts import ensure_account, post_sign_in
from tests.support.helpers import CONTACT_NAME, SENDER, envelope, status, text_message

pytestmark = pytest.mark.anyio

OpenApp = Callable[..., AbstractAsyncContextManager[Pyloto]]
STEPS = ("llm1", "llm2", "llm3")
PMP_SERVICE = {"billable": True, "category": "service", "pricing_model": "PMP", "type": "regular"}


@pytest.fixture
def open_app(
    make_settings: Callable[..., Settings], fake_openai: FakeOpenAI, backend: dict[str, str]
) -> OpenApp:
    """The app with the console on and the LLM on the fake server."""

    @asynccontextmanager
    async def open_with(**overrides: str) -> AsyncIterator[Pyloto]:
        variables = {
            "OPS_CONSOLE_ENABLED": "true",
            "OPENAI_API_KEY": "sk-test",
            "OPENAI_BASE_URL": fake_openai.base_url,
            "OPENAI_MAX_RETRIES": "0",
            **backend,
            **overrides,
        }
        app = create_app(bootstrap(make_settings(**variables)))
        async with AsyncTestClient(app=app) as client:
            yield Pyloto(client)

    return open_with


async def _sign_in(app: Pyloto, role: str = AGENT) -> None:
    await ensure_account(app.container.settings, role=role)
    assert (await post_sign_in(app.client)).status_code == 303


async def _replied(app: Pyloto, text: str) -> dict[str, Any]:
    message = text_message(text)
    assert (await app.post(envelope([message], name=CONTACT_NAME))).status_code == 200
    view = await app.wait_for(message["id"], {"sent"})
    assert view["outbound_message_id"]
    return view


def _tokens(view: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """The tokens of each LLM step the record kept."""
    results = view["results"]
    return {
        step: (results[step]["input_tokens"], results[step]["output_tokens"])
        for step in STEPS
        if results.get(step)
    }


def _cell(html: str, day: str, name: str) -> str:
    """The text of cell `name` in the Cost page's row of `day`."""
    row = re.search(rf'<tr class="cost-day" data-day="{day}">(.*?)</tr>', html)
    assert row, f"no row for {day}"
    cell = re.search(rf'<td class="num {re.escape(name)}">([^<]*)</td>', row.group(1))
    assert cell, f"no cell {name}"
    return unescape(cell.group(1))


def _no_personal_data(html: str) -> None:
    text = unescape(re.sub(r"<[^>]+>", " ", html))
    for body in (html, text):
        assert scan_lines(body.splitlines()) == []
        assert SENDER not in body
        assert CONTACT_NAME not in body


async def test_the_cost_page_counts_each_billable_message_once_and_prices_it(
    open_app: OpenApp,
) -> None:
    """A reply's sent, delivered and read statuses (each repeating its pricing, one of them
    twice in one batch) count one billable service message; a marketing one counts on its
    own, a free one not at all; the tokens per step are the records' own, and the prices
    set give the costs."""
    now = int(time.time())
    async with open_app(
        LLM_PRICE_INPUT_PER_MILLION="2",
        LLM_PRICE_OUTPUT_PER_MILLION="8",
        WHATSAPP_PRICE_PER_BILLABLE="0.01",
        WHATSAPP_PRICES_BY_CATEGORY="marketing=0.05",
    ) as app:
        await _sign_in(app)
        view = await _replied(app, "Qual o prazo de entrega?")
        outbound = view["outbound_message_id"]
        for n, state in enumerate(("sent", "delivered", "read")):
            item = status(outbound, state, now + n) | {"pricing": PMP_SERVICE}
            response = await app.post(envelope(statuses=[item, item]))
            assert response.status_code == 200
        marketing = {**PMP_SERVICE, "category": "marketing"}
        free = {**PMP_SERVICE, "billable": False, "type": "free_customer_service"}
        extra = [
            status("wamid.MKT1", "delivered", now) | {"pricing": marketing},
            status("wamid.FREE1", "delivered", now) | {"pricing": free},
        ]
        assert (await app.post(envelope(statuses=extra))).status_code == 200
        await app.wait_idle()

        page = await app.client.get("/ops/costs")
        assert page.status_code == 200
        html = page.text
        day = time.strftime("%Y-%m-%d", time.gmtime(now))
        assert _cell(html, day, "billable-service") == "1"
        assert _cell(html, day, "billable-marketing") == "1"
        assert _cell(html, day, "billable-total") == "2"
        assert _cell(html, day, "whatsapp-cost") == "0.0600 USD"
        tokens = _tokens(view)
        assert tokens, "the LLM steps kept their tokens"
        for step, (given, taken) in tokens.items():
            assert _cell(html, day, f"tokens-{step}") == f"{given:,} in / {taken:,} out"
        expected = sum(i * 2 + o * 8 for i, o in tokens.values()) / 1_000_000
        assert _cell(html, day, "llm-cost") == f"{expected:,.4f} USD"
        assert _cell(html, day, "day-cost") == f"{expected + 0.06:,.4f} USD"
        assert 'id="nav-costs" href="/ops/costs" aria-current="page"' in html
        _no_personal_data(html)


async def test_without_prices_the_cost_page_shows_counts_and_no_cost(open_app: OpenApp) -> None:
    """No price set: the counts are there, every cost is "-" and the page says why."""
    now = int(time.time())
    async with open_app() as app:
        await _sign_in(app)
        view = await _replied(app, "Vocês abrem sábado?")
        item = status(view["outbound_message_id"], "sent", now) | {"pricing": PMP_SERVICE}
        assert (await app.post(envelope(statuses=[item]))).status_code == 200
        html = (await app.client.get("/ops/costs")).text
        day = time.strftime("%Y-%m-%d", time.gmtime(now))
        assert _cell(html, day, "billable-service") == "1"
        for name in ("whatsapp-cost", "llm-cost", "day-cost"):
            assert _cell(html, day, name) == "-"
        assert "No price is set" in html


async def test_a_status_with_unreadable_pricing_is_answered_and_counts_nothing(
    open_app: OpenApp,
) -> None:
    """Pricing of the wrong shape (a string, a billable that is not a boolean and no type,
    no category) never fails the webhook: the status is kept, nothing is counted."""
    now = int(time.time())
    async with open_app() as app:
        await _sign_in(app)
        view = await _replied(app, "Tem horário amanhã?")
        outbound = view["outbound_message_id"]
        odd = [
            status(outbound, "sent", now) | {"pricing": "service"},
            status(outbound, "delivered", now) | {"pricing": {"billable": "yes", "category": 7}},
            status(outbound, "read", now) | {"pricing": {"billable": True}},
            status(outbound, "read", now) | {"pricing": [1, 2]},
        ]
        response = await app.post(envelope(statuses=odd))
        assert response.status_code == 200
        assert response.json()["statuses"] == 4
        assert (await app.view(view["message_id"]))["delivery_status"] == "read"
        html = (await app.client.get("/ops/costs")).text
        assert "billable-service" not in html


async def test_a_conversation_page_shows_its_replies_and_tokens(open_app: OpenApp) -> None:
    """The inbox's conversation page counts the replies its records sent and those Meta
    delivered (billable), and the tokens its LLM steps used; without personal data in the
    card."""
    now = int(time.time())
    async with open_app(LLM_PRICE_INPUT_PER_MILLION="1000000") as app:
        await _sign_in(app)
        first = await _replied(app, "Qual o preço do corte?")
        second = await _replied(app, "E da barba?")
        item = status(first["outbound_message_id"], "delivered", now)
        assert (await app.post(envelope(statuses=[item]))).status_code == 200
        key = first["conversation"]
        assert key == second["conversation"]

        page = await app.client.get(f"/ops/inbox/{key}")
        assert page.status_code == 200
        card = re.search(r'<div class="card" id="conversation-cost">(.*?)</div>', page.text)
        assert card, "no cost card"
        html = card.group(1)
        assert re.search(r'id="replies-sent">2<', html)
        assert re.search(r'id="replies-billable">1<', html)
        tokens = [_tokens(first), _tokens(second)]
        given = sum(i for t in tokens for i, _ in t.values())
        taken = sum(o for t in tokens for _, o in t.values())
        assert f'id="tokens-total">{given:,} in / {taken:,} out<' in html
        assert f'id="llm-cost">{given:,.4f} USD<' in html
        _no_personal_data(html)
