"""The Queues page in a headless Chromium, on a `pyloto serve` on Redis with the local
queue: a send Meta refused for now is listed as a retry with its next attempt, the serving
instance as live; at 1440 and 390 px wide, nothing wider than the screen and no personal
data. Screenshots under tests/artifacts/screenshots/."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from selenium.webdriver.common.by import By

from pyloto_corp.domain.privacy import message_ref
from tests.e2e.ops_console import Console, personal_data_in, post_texts, wait_until

# The browser fixtures of the console's own browser tests.
from tests.e2e.test_ops_console_browser import chrome, fits_the_phone, open_console  # noqa: F401
from tests.support.fake_graph import FakeGraph, Fault
from tests.support.helpers import CONTACT_NAME, SENDER

pytestmark = pytest.mark.browser


def test_the_queues_page_shows_a_retry_and_the_instances_at_desktop_and_phone_widths(
    request: pytest.FixtureRequest, graph: FakeGraph
) -> None:
    start: Callable[..., Console] = request.getfixturevalue("open_console")
    console = start(
        backend="redis",
        graph=graph,
        LOCAL_QUEUE_MIN_BACKOFF_SECONDS="300",
        LOCAL_QUEUE_MAX_BACKOFF_SECONDS="300",
    )
    console.sign_in()
    console.find("svg#machine")
    graph.inject(Fault(code=130429))
    (message_id,) = post_texts(console.server, ["Quero saber o preço"])
    console.find("#nav-queues").click()
    console.find("#queue-outbound")

    def retrying() -> bool:
        console.open("/ops/queues")
        return console.text_of("#retrying-outbound") == "1"

    wait_until(retrying, lambda: console.text_of("#queue-outbound"))
    row = console.find("#retries-outbound tr.retry")
    cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
    assert cells[0] == message_ref(message_id)
    assert cells[2] == "2"  # the attempt due next
    assert "(in " in cells[3]
    assert "(this one)" in console.text_of("#instance-list tr.instance.live")
    forbidden = {"the sender's number": SENDER, "the contact's name": CONTACT_NAME}
    forbidden["the message id"] = message_id
    console.driver.set_window_size(1440, 900)
    console.screenshot("queues-desktop")
    problems = personal_data_in(console, forbidden)
    console.driver.set_window_size(390, 1600)  # tall: no scrollbar narrows it
    fits_the_phone(console)
    console.screenshot("queues-phone")
    console.driver.set_window_size(1280, 900)
    assert not problems, "\n".join(problems)
