"""A replay's followed outcomes, a dead letter's Replay button and the customer search, in
a headless Chromium on a `pyloto serve` (the Graph API a local server of the test's own),
at desktop and phone widths; the screenshots are also copied to /tmp/replay-*.png."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pyloto_corp.domain.privacy import message_ref
from tests.e2e.ops_console import Console, personal_data_in, post_texts, wait_until
from tests.e2e.test_ops_console_browser import (
    OpenConsole,
    chrome,
    fits_the_phone,
    link_of,
    open_console,
    signed_in,
)
from tests.support.fake_graph import FakeGraph, Fault
from tests.support.helpers import CONTACT_NAME, SENDER

pytestmark = pytest.mark.browser

__all__ = ["chrome", "open_console"]  # the fixtures

SHOTS = Path("/tmp")
FORBIDDEN = {"the number": SENDER, "its last digits": "98765-4321", "the name": CONTACT_NAME}


def both_widths(console: Console, label: str) -> None:
    """Screenshots at 1440 px and 390 px (where nothing may be wider than the screen)."""
    for width, height, name in ((1440, 900, "desktop"), (390, 1600, "phone")):
        console.driver.set_window_size(width, height)
        if name == "phone":
            fits_the_phone(console)
        shot = console.screenshot(f"{label}-{name}")
        shutil.copyfile(shot, SHOTS / f"replay-{label}-{name}.png")
    console.driver.set_window_size(1440, 900)


def replay_from_its_page(console: Console, page: str) -> str:
    """Open the dead letter's page, Replay…, confirm; the outcome its row settles on."""
    console.driver.get(page)
    console.find("#replay-message-button").click()
    assert "Replay message" in console.text_of("#confirm-what")
    console.find("#confirm-button").click()
    # The page refreshes itself (meta refresh) while the record still runs.
    return wait_until(
        lambda: (
            (row := console.first("#replay-result li.replayed"))
            and (outcome := row.get_attribute("data-outcome")) in ("sent", "failed")
            and outcome
        ),
        lambda: console.visible_text()[:1500],
    )


def test_replay_from_a_dead_letters_page_says_what_became_of_it(
    open_console: OpenConsole, graph: FakeGraph
) -> None:
    graph.inject(Fault(code=131026))
    console = signed_in(open_console(graph=graph))
    (message_id,) = post_texts(console.server, ["Olá, quero saber o preço"])

    def dead_lettered() -> bool:
        console.open("/ops/dead-letters")
        return bool(console.all("tr.dead-letter"))

    wait_until(dead_lettered, lambda: console.visible_text()[:1000])
    page = link_of(console, "tr.dead-letter", message_id)

    graph.inject(Fault(code=131026))
    assert replay_from_its_page(console, page) == "failed"
    row = console.find("#replay-result li.replayed")
    assert "failed again" in row.text
    assert "131026" in row.text
    assert message_ref(message_id) in row.text
    both_widths(console, "failed-again")
    problems = personal_data_in(console, FORBIDDEN)

    assert replay_from_its_page(console, page) == "sent"
    assert console.text_of("#replay-result li.replayed .outcome") == "sent"
    both_widths(console, "sent")
    console.find("#replay-result li.replayed a.message-link").click()
    assert console.text_of("#state") == "sent"
    assert console.first("#replay-message-button") is None
    assert len(graph.sends_for(message_id)) == 1
    assert not problems + personal_data_in(console, FORBIDDEN)


def test_an_operator_finds_a_customer_by_their_number(open_console: OpenConsole) -> None:
    console = signed_in(open_console())
    (message_id,) = post_texts(console.server, ["Bom dia"])
    wait_until(
        lambda: console.open("/ops/records?state=sent") or console.all("tr.record"),
        lambda: console.visible_text()[:1000],
    )
    console.find("#customer-id").send_keys("+55 (11) 98765-4321")
    console.find("#customer-submit").click()
    console.find("#customer-key")
    assert console.path.startswith("/ops/records?customer=")
    for digits in ("98765", "4321", "5511"):
        assert digits not in console.path
    assert [r.text.split()[0] for r in console.all("tr.record")] == [message_ref(message_id)]
    both_widths(console, "customer")
    problems = personal_data_in(console, FORBIDDEN)

    console.find("#customer-id").send_keys("+55 11 90000-0000")
    console.find("#customer-submit").click()
    assert "No records for this phone number or BSUID." in console.text_of("#notice")
    assert console.first("#customer-id").get_attribute("value") == ""  # not echoed back
    both_widths(console, "no-records")
    assert not problems + personal_data_in(console, FORBIDDEN)
