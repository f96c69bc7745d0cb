"""The console's LLM health on the real app (SQLite and Redis, local queue, dry-run outbox,
the LLM on the fake OpenAI server): a timeout and an invalid answer counted under their
step and model, the LLM's share of the replies moving as they fall back to templates, on
the main page's card and in the summary API, with no personal data in either."""

from __future__ import annotations

import re
from html import unescape
from typing import Any

import pytest

from pyloto_corp.devtools.fake_openai import (
    CHOICE,
    DEFAULTS,
    DRAFT,
    EVENT,
    Answer,
    FakeOpenAI,
    json_answer,
)
from pyloto_corp.observability.pii_scan import scan_lines
from tests.e2e.support import Pyloto
from tests.e2e.test_ops_costs import OpenApp, open_app
from tests.support.accounts import ensure_account, post_sign_in
from tests.support.helpers import CONTACT_NAME, CPF, EMAIL, SENDER, envelope, text_message

pytestmark = pytest.mark.anyio

MODEL = "gpt_4o_mini"  # OPENAI_MODEL's default, as a counter names it


__all__ = ["open_app"]  # the fixture: the console on, the LLM on the fake server


async def _replied(app: Pyloto, text: str) -> dict[str, Any]:
    message = text_message(text)
    assert (await app.post(envelope([message], name=CONTACT_NAME))).status_code == 200
    return await app.view((await app.wait_for(message["id"], {"sent"}))["message_id"])


async def _summary(app: Pyloto) -> dict[str, Any]:
    response = await app.client.get("/ops/api/summary")
    assert response.status_code == 200
    _no_personal_data(response.text)
    found: dict[str, Any] = response.json()
    return found


def _calls(summary: dict[str, Any], window: str = "hour") -> dict[tuple[str, str], Any]:
    return {(c["step"], c["model"]): c for c in summary["llm"][window]["calls"]}


def _no_personal_data(body: str) -> None:
    text = unescape(re.sub(r"<[^>]+>", " ", body))
    for seen in (body, text):
        assert scan_lines(seen.splitlines()) == []
        for secret in (SENDER, CONTACT_NAME, CPF, EMAIL, "orçamento"):
            assert secret not in seen


async def test_a_timeout_and_an_invalid_answer_are_counted_per_step_and_the_share_moves(
    open_app: OpenApp, fake_openai: FakeOpenAI
) -> None:
    """Three messages: the first answered by the LLM all through (LLM#1 by a dated
    snapshot of the model), the second's LLM#2 too slow, the third's LLM#3 answer not a
    message. Each step counts its calls by outcome under the model asked for; two replies
    are templates, so the LLM's share drops from all to a third; the card shows it."""
    async with open_app(OPENAI_TIMEOUT_SECONDS="1") as app:  # a 1 s deadline a call
        await ensure_account(app.container.settings)
        assert (await post_sign_in(app.client)).status_code == 303

        dated = Answer(content=DEFAULTS[EVENT], model="gpt-4o-mini-2024-07-18")
        fake_openai.queue(EVENT, dated)
        first = await _replied(app, f"Quero um orçamento, meu CPF é {CPF} e o e-mail {EMAIL}")
        assert first["fallback_reason"] is None
        before = await _summary(app)
        assert before["replies"]["hour"]["llm"] == 1
        assert before["replies"]["hour"]["llm_share"] == 1.0

        fake_openai.queue(DRAFT, json_answer(DEFAULTS[DRAFT], delay=2.5))
        slow = await _replied(app, "Qual o preço do corte?")
        assert (slow["fallback_reason"], slow["results"]["fallback_step"]) == ("timeout", "llm2")
        fake_openai.queue(CHOICE, json_answer({"type": "carousel", "body": 7}))
        wrong = await _replied(app, "E da barba?")
        assert wrong["fallback_reason"] == "invalid_output"
        await app.wait_idle()

        after = await _summary(app)
        calls = _calls(after)
        assert set(calls) == {("llm1", MODEL), ("llm2", MODEL), ("llm3", MODEL)}
        assert calls[("llm1", MODEL)]["outcomes"]["ok"] == 3
        llm2 = calls[("llm2", MODEL)]
        assert (llm2["outcomes"]["ok"], llm2["outcomes"]["timeout"], llm2["total"]) == (2, 1, 3)
        assert llm2["rates"]["timeout"] == pytest.approx(1 / 3)
        llm3 = calls[("llm3", MODEL)]
        assert (llm3["outcomes"]["ok"], llm3["outcomes"]["invalid"]) == (1, 1)
        assert after["llm"]["hour"]["latency_ms"]["llm2"]["count"] == 3
        replies = after["replies"]["hour"]
        assert (replies["llm"], replies["template"], replies["total"]) == (1, 2, 3)
        assert replies["llm_share"] == pytest.approx(1 / 3)
        assert _calls(after, "day") == calls

        page = await app.client.get("/ops")
        assert page.status_code == 200
        card = re.search(
            r'<div class="card chart llm-health" data-window="last hour">.*?</div>', page.text
        )
        assert card, "no LLM card on the main page"
        row = re.search(rf'data-step="llm2" data-model="{MODEL}">(.*?)</tr>', card.group(0))
        assert row
        assert '<td class="num outcome-timeout over">1 ' in row.group(1)  # over the 5 % gate
        assert '<b class="llm-share">33.3 %</b>' in card.group(0)
        _no_personal_data(page.text)
