"""The operations console in a real browser: a headless Chromium signed in to a `pyloto serve`
child process with `OPS_CONSOLE_ENABLED=true`, posting signed webhooks and watching the pages.

Every page a test visits is saved as a screenshot under tests/artifacts/screenshots/;
`pytest --update-docs-screenshot` also copies the live machine page to
docs/images/ops-console.png. Without Chromium and ChromeDriver these tests fail (never skip):
`python -m tests.support.browser install` provides them.
"""

from __future__ import annotations

import contextlib
import itertools
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from pyloto_corp.bootstrap import load_chart
from pyloto_corp.domain.privacy import message_ref
from tests.e2e.ops_console import (
    CONSOLE_VARIABLES,
    Console,
    personal_data_in,
    post_texts,
    wait_until,
)
from tests.e2e.servers import ServeProcess, process_env, pyloto_command, redis_variables
from tests.e2e.support import FALLBACK_PATH
from tests.support import browser
from tests.support.accounts import ACCOUNT, add_with_cli
from tests.support.fake_graph import PHONE_NUMBER_ID, TOKEN, FakeGraph, Fault
from tests.support.helpers import (
    APP_SECRET,
    CNPJ,
    CONTACT_NAME,
    CPF,
    EMAIL,
    PHONE,
    SENDER,
    VERIFY_TOKEN,
)

pytestmark = pytest.mark.browser

STATES = tuple(load_chart().states)
OpenConsole = Callable[..., Console]


@pytest.fixture
def chrome(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    """A headless Chromium of this test's own, on a fresh profile; fails (never skips) when
    the browser is not installed."""
    found = browser.binaries()
    if found is None:
        pytest.fail(browser.MISSING, pytrace=False)
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager: never download anything
    driver = browser.start_chrome(*found, tmp_path / "profile", tmp_path / "chromedriver.log")
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def open_console(
    chrome: WebDriver, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[OpenConsole]:
    """Start a `pyloto serve` with the console on (embedded SQLite, or `backend="redis"` on
    the session's redis-server under the test's own prefix) and point the browser at it:
    `open_console(graph=fake_graph, VAR="x")`. When the test fails, the page it was on is
    saved as a screenshot; the server's log is printed at teardown (pytest shows it when the
    test failed)."""
    servers: list[ServeProcess] = []
    consoles: list[Console] = []

    def start(backend: str = "sqlite", graph: FakeGraph | None = None, **extra: str) -> Console:
        variables = {
            "STATE_SQLITE_PATH": str(tmp_path / "state" / "pyloto.db"),
            "WHATSAPP_APP_SECRET": APP_SECRET,
            "WHATSAPP_VERIFY_TOKEN": VERIFY_TOKEN,
            "LOCAL_QUEUE_MIN_BACKOFF_SECONDS": "0.05",
            "LOCAL_QUEUE_MAX_BACKOFF_SECONDS": "0.5",
            # Each message is counted on its own: one reply per message.
            "BURST_QUIET_SECONDS": "0",
        }
        if backend == "redis":
            redis_url = request.getfixturevalue("redis_server").url
            prefix = request.getfixturevalue("redis_prefix")
            variables = redis_variables(redis_url, prefix, tmp_path)
        if graph is not None:
            variables |= {
                "WHATSAPP_ACCESS_TOKEN": TOKEN,
                "WHATSAPP_PHONE_NUMBER_ID": PHONE_NUMBER_ID,
                "WHATSAPP_API_BASE_URL": graph.base_url,
                "WHATSAPP_TIMEOUT_SECONDS": "2",
            }
        (tmp_path / "state").mkdir(exist_ok=True)
        env = process_env({**variables, **CONSOLE_VARIABLES, **extra})
        server = ServeProcess(env, tmp_path / f"server-{len(servers)}.log")
        servers.append(server)
        server.start()
        # The account an operator adds beside the running server, as the README says.
        added = add_with_cli(pyloto_command(), env)
        assert added.returncode == 0, added.stderr
        consoles.append(Console(chrome, server, request.node.name))
        return consoles[-1]

    failed_before = request.session.testsfailed
    yield start
    if consoles and request.session.testsfailed > failed_before:  # this test failed
        with contextlib.suppress(WebDriverException):
            print("page at the failure:", consoles[-1].screenshot("at-failure"))
    for server in servers:
        server.cleanup()
        print(f"--- {server.log.name}\n{server.log.read_text(errors='replace')[-8000:]}")


def signed_in(console: Console) -> Console:
    """Sign in with the test's account and wait for the machine page."""
    console.sign_in()
    console.find("svg#machine")
    return console


def count(console: Console, state: str) -> str:
    """The number shown in a state's box."""
    return console.text_of(f"#count-{state}")


def edge_count(console: Console, source: str, dest: str) -> str:
    """The number shown on a transition's edge (taken in the last hour)."""
    return console.text_of(f"text.edge-count[data-transition='{source}>{dest}']")


def wait_count(console: Console, state: str, expected: int) -> None:
    """Wait until the state's box shows `expected` (the page updates itself)."""
    wait_until(
        lambda: count(console, state) == str(expected),
        lambda: f"#count-{state} shows {count(console, state)!r}, not {expected}",
    )


def row_of(console: Console, rows_css: str, message_id: str) -> WebElement:
    """The one row among `rows_css` about `message_id`: pages show a message by its
    reference (`message_ref`), never by its id, which encodes the sender's number."""
    ref = message_ref(message_id)
    found = [row for row in console.all(rows_css) if ref in row.text]
    assert len(found) == 1, f"{len(found)} rows of {rows_css} show {ref}"
    return found[0]


def link_of(console: Console, rows_css: str, message_id: str) -> str:
    """The URL of a message's page, from its row."""
    link = row_of(console, rows_css, message_id).find_element(By.CSS_SELECTOR, "a.message-link")
    return str(link.get_attribute("href"))


def wait_state(console: Console, url: str, state: str) -> None:
    """Reload a message's page until it shows `state`."""

    def shown() -> bool:
        console.driver.get(url)
        return console.text_of("#state") == state

    wait_until(shown, lambda: f"{console.path} shows {console.text_of('#state')!r}, not {state}")


def replay_result(console: Console) -> tuple[list[str], list[str]]:
    """The references listed as replayed, and as skipped, on a replay's result page."""
    result = console.find("#replay-result")
    return (
        [
            e.find_element(By.TAG_NAME, "code").text
            for e in result.find_elements(By.CSS_SELECTOR, ".replayed")
        ],
        [
            e.find_element(By.TAG_NAME, "code").text
            for e in result.find_elements(By.CSS_SELECTOR, ".skipped")
        ],
    )


def refused_without_csrf(console: Console, form_css: str) -> None:
    """POST a form of the page with the browser's cookies and every field but its CSRF
    token: the console answers 403 and does nothing."""
    form = console.find(form_css)
    action = str(form.get_attribute("action"))
    fields = {
        str(i.get_attribute("name")): str(i.get_attribute("value"))
        for i in form.find_elements(By.CSS_SELECTOR, "input[name]")
        if i.get_attribute("name") != "csrf"
    }
    cookies = {str(c["name"]): str(c["value"]) for c in console.driver.get_cookies()}
    response = httpx.post(action, data=fields, cookies=cookies, timeout=10)
    assert response.status_code == 403, (action, response.status_code)


# --- 1. sign-in -------------------------------------------------------------------------


def test_signing_in_a_wrong_password_is_refused_and_no_page_shows_data_without_it(
    open_console: OpenConsole,
) -> None:
    """Without the cookie every console path answers 401 with the sign-in page and no count;
    a wrong password shows the error; the right one lands on the machine, with an HttpOnly,
    SameSite=Strict cookie that the page's scripts cannot read."""
    console = open_console()
    with httpx.Client(base_url=console.server.url, timeout=10) as client:
        for path in ("/ops", "/ops/records", "/ops/dead-letters", "/ops/messages/x"):
            response = client.get(path)
            assert response.status_code == 401, (path, response.status_code)
            assert 'id="signin"' in response.text, path
            assert "count-" not in response.text, path
        summary = client.get("/ops/api/summary")
        assert summary.status_code == 401
        assert not [s for s in STATES if s in summary.text], summary.text

    console.open("/ops")
    console.find("#signin")
    assert console.first("svg#machine") is None
    console.screenshot("signin")

    console.sign_in(password="not-the-password")
    assert console.find(".error").is_displayed()
    assert console.first("svg#machine") is None
    console.screenshot("signin-refused")

    signed_in(console)
    assert console.path == "/ops"
    [cookie] = [c for c in console.driver.get_cookies() if c.get("httpOnly")]
    assert cookie["sameSite"] == "Strict"
    assert cookie["name"] not in str(console.script("return document.cookie"))
    console.screenshot("machine")


# --- 2. live counts -------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_the_machine_page_counts_messages_as_they_run_without_reloading(
    open_console: OpenConsole,
    graph: FakeGraph,
    backend: str,
    request: pytest.FixtureRequest,
) -> None:
    """Three messages posted while the page is open reach `sent` in the state boxes and on
    the edges, and a fourth the Graph API refuses for good shows in `failed`: all by the
    page's polling, the page never reloaded (a marker set in it before is still there)."""
    console = signed_in(open_console(backend=backend, graph=graph))
    assert count(console, "sent") == "0"
    boxes = {s for s in STATES if console.first(f"g.state[data-state='{s}'] #count-{s}")}
    assert boxes == set(STATES)
    console.script("window.__marker = 1")
    first_update = console.text_of("#updated-at")

    post_texts(console.server, ["Oi, bom dia", "Qual o horário?", "Vocês abrem sábado?"])
    wait_count(console, "sent", 3)
    for source, dest in itertools.pairwise(FALLBACK_PATH):
        assert edge_count(console, source, dest) == "3", (source, dest)
    assert console.text_of("#updated-at") != first_update
    assert console.first("#charts") is not None

    tip = console.script(
        "return document.querySelector(\"g.edge[data-transition='sending>sent'] title\")"
        ".textContent"
    )
    assert tip == "send: sending to sent, 3 in the last hour"
    # Arrows nobody took have no number (dimmed), never a grey 0.
    assert edge_count(console, "llm1", "llm2") == ""
    assert "idle" in str(console.find("g.edge[data-transition='llm1>llm2']").get_attribute("class"))
    assert console.text_of("#into-failed") == ""

    graph.inject(Fault(code=131026))  # permanent: the next send is dead-lettered
    post_texts(console.server, ["Quero remarcar"])
    wait_count(console, "failed", 1)
    assert count(console, "sent") == "3"
    # The arrows into `failed` are one line beside it; the refresh keeps the wording apart.
    wait_until(
        lambda: console.text_of("#into-failed") == "into failed: 1",
        lambda: console.text_of("#into-failed"),
    )
    hour = console.find(".chart[data-window='last hour'] .failures").text
    assert "dead-letterings (events, last hour) 1" in hour
    assert "failed now (records) 1" in hour
    assert console.script("return window.__marker") == 1, "the page was reloaded"

    if backend == "sqlite" and request.config.getoption("--update-docs-screenshot"):
        console.screenshot_for_docs(f"machine-{backend}")
    else:
        console.screenshot(f"machine-{backend}")


# --- 3. a message's timeline ------------------------------------------------------------


def test_a_message_timeline_opens_from_the_records_and_from_the_search(
    open_console: OpenConsole,
) -> None:
    """A sent message's row in the records links to its page, whose timeline holds every
    transition from `received` to `sent`, each with a duration and an attempt; the search
    by id leads to the same page."""
    console = signed_in(open_console(OTEL_TRACES_EXPORTER="console"))  # records keep a trace
    [message_id, _other] = post_texts(console.server, ["Qual o endereço?", "Obrigado"])
    wait_count(console, "sent", 2)

    console.find("a#nav-records").click()
    console.find("table#records")
    assert len(console.all("tr.record")) == 2
    console.screenshot("records")
    row_of(console, "tr.record", message_id).find_element(By.CSS_SELECTOR, "a.message-link").click()
    console.find("ol#timeline")
    assert console.text_of("#ref") == message_ref(message_id)
    console.screenshot("message")

    steps = console.all("ol#timeline li.transition")
    assert [s.find_element(By.CSS_SELECTOR, ".from").text for s in steps] == FALLBACK_PATH[:-1]
    assert [s.find_element(By.CSS_SELECTOR, ".to").text for s in steps] == FALLBACK_PATH[1:]
    for step in steps:
        for part in (".trigger", ".at", ".duration"):
            assert step.find_element(By.CSS_SELECTOR, part).text.strip() not in ("", "-"), part
        assert int(step.find_element(By.CSS_SELECTOR, ".attempt").text) >= 1
    assert console.text_of("#state") == "sent"
    assert re.fullmatch("[0-9a-f]{32}", console.text_of("#trace-id"))
    assert console.first("#failure-reason") is None
    assert console.first("#reply") is not None

    console.open("/ops/records")
    console.find("#search input[name='id']").send_keys(message_id)
    console.find("#search-submit").click()
    wait_until(
        lambda: console.first("#ref") is not None,
        lambda: f"the search led to {console.path}",
    )
    assert console.text_of("#ref") == message_ref(message_id)
    assert message_id not in console.path


# --- 4. dead letters and replay -----------------------------------------------------------


def test_a_dead_letter_is_replayed_from_its_row_and_another_with_replay_all(
    open_console: OpenConsole, graph: FakeGraph
) -> None:
    """Two sends the Graph API refuses for good end in `failed`, listed in the dead letters
    with their reason. Replaying one from its row asks for confirmation, then lists it as
    replayed; `replay all` does the same for the other. Both then reach `sent`, each sent
    once. A replay POST without the console's CSRF token is refused."""
    graph.inject(Fault(code=131026), Fault(code=131026))
    console = signed_in(open_console(graph=graph))
    ids = post_texts(console.server, ["Preciso de ajuda", "Alguém aí?"])
    refs = [message_ref(message_id) for message_id in ids]
    wait_count(console, "failed", 2)

    console.find("a#nav-dead-letters").click()
    console.find("table#dead-letters")
    assert len(console.all("tr.dead-letter")) == 2
    for message_id in ids:
        reason = row_of(console, "tr.dead-letter", message_id).find_element(
            By.CSS_SELECTOR, ".reason"
        )
        assert "131026" in reason.text
    pages = [link_of(console, "tr.dead-letter", message_id) for message_id in ids]
    console.screenshot("dead-letters")
    refused_without_csrf(console, "form.replay-one")
    refused_without_csrf(console, "form#replay-all")

    row = row_of(console, "tr.dead-letter", ids[0])
    row.find_element(By.CSS_SELECTOR, ".replay-button").click()
    console.find("form#confirm-replay")
    console.screenshot("confirm-one")
    console.find("#confirm-button").click()
    assert replay_result(console) == ([refs[0]], [])
    console.screenshot("replayed-one")
    wait_state(console, pages[0], "sent")

    console.open("/ops/dead-letters")
    assert [r.text for r in console.all("tr.dead-letter") if refs[1] in r.text]
    assert len(console.all("tr.dead-letter")) == 1
    console.find("form#replay-all [type='submit']").click()
    console.find("form#confirm-replay")
    console.screenshot("confirm-all")
    console.find("#confirm-button").click()
    assert replay_result(console) == ([refs[1]], [])
    console.screenshot("replayed-all")
    wait_state(console, pages[1], "sent")
    console.screenshot("message-after-replay")

    for message_id in ids:
        assert len(graph.sends_for(message_id)) == 1, message_id


# --- 5. no personal data on any page ---------------------------------------------------


def test_no_page_shows_a_phone_an_email_a_cpf_or_the_contact_name(
    open_console: OpenConsole, graph: FakeGraph
) -> None:
    """Messages whose text and contact name carry personal data run to `sent` and one to
    `failed`: no page of the console (machine, records, each message, dead letters, the
    confirmation and the replay's result, the cost page, the summary the page polls) holds
    anything the `pyloto pii-scan` detector finds, in its HTML or its visible text, nor the
    contact's name or phone as written."""
    graph.inject(Fault(code=131026))
    console = signed_in(open_console(graph=graph))
    texts = [
        f"Meu telefone é {PHONE}, me liga",
        f"Meu e-mail é {EMAIL}",
        f"CPF {CPF} e CNPJ {CNPJ}",
        f"Sou {CONTACT_NAME}, meu número é {SENDER}",
    ]
    ids = post_texts(console.server, texts, sender=SENDER, name=CONTACT_NAME)
    wait_count(console, "failed", 1)
    wait_count(console, "sent", len(ids) - 1)
    forbidden = {
        "the contact's name": CONTACT_NAME,
        **{f"the contact's name ({part})": part for part in CONTACT_NAME.split()},
        "the sender's number": SENDER,
        "the phone": PHONE,
        "the e-mail": EMAIL,
        "the CPF": CPF,
        "the CNPJ": CNPJ,
    }
    problems: list[str] = []

    def check(label: str) -> None:
        console.screenshot(label)
        problems.extend(personal_data_in(console, forbidden))

    check("machine")
    console.open("/ops/records")
    console.find("table#records")
    check("records")
    pages = [link_of(console, "tr.record", message_id) for message_id in ids]
    for number, url in enumerate(pages, start=1):
        console.driver.get(url)
        console.find("ol#timeline")
        check(f"message-{number}")
    console.open("/ops/dead-letters")
    console.find("tr.dead-letter")
    check("dead-letters")
    console.find("form.replay-one .replay-button").click()
    console.find("form#confirm-replay")
    check("confirm")
    console.find("#confirm-button").click()
    console.find("#replay-result")
    check("replay-result")
    console.open("/ops/costs")
    console.find("#prices")
    check("costs")
    console.open("/ops/api/summary")
    problems.extend(personal_data_in(console, forbidden))

    assert not problems, "\n".join(problems)


def test_no_page_shows_a_message_id_in_clear(open_console: OpenConsole) -> None:
    """A WhatsApp message id encodes the sender's number: the console shows its reference,
    and carries the id only sealed in links, never in clear on a page."""
    console = signed_in(open_console())
    ids = post_texts(console.server, ["Bom dia", "Boa tarde"])
    wait_count(console, "sent", len(ids))
    forbidden = {f"message id {n}": m for n, m in enumerate(ids, start=1)}
    console.open("/ops/records")
    console.find("table#records")
    problems = personal_data_in(console, forbidden)
    for message_id in ids:
        console.driver.get(link_of(console, "tr.record", message_id))
        console.find("ol#timeline")
        problems.extend(personal_data_in(console, forbidden))
        console.open("/ops/records")
    assert not problems, "\n".join(problems)


def fits_the_phone(console: Console) -> None:
    """Nothing on the page is wider than a phone's screen (no sideways scrolling)."""
    wide = console.script(
        "var w = document.documentElement.clientWidth; return Array.from("
        "document.querySelectorAll('main *')).filter(function (e) {"
        " return e.getBoundingClientRect().right > w + 1; }).map(function (e) {"
        " return e.tagName + '#' + e.id + '.' + e.className; }).slice(0, 8);"
    )
    assert wide == [], f"wider than the screen: {wide}"


def test_an_agent_takes_over_replies_and_releases_from_the_inbox(
    open_console: OpenConsole,
) -> None:
    """A customer asks for a person; in the inbox the conversation waits, its page shows
    their words; Take over, a reply and Release each change the page, and a second Release
    is refused on the page (409), not an error. Screenshots at desktop and phone widths."""
    console = signed_in(open_console())
    asking = "Oi, quero falar com um atendente sobre o pedido 4471"
    post_texts(console.server, [asking])

    def listed() -> bool:
        console.open("/ops/inbox")
        return bool(console.all("tr.conversation[data-mode='waiting_human']"))

    wait_until(listed, lambda: console.visible_text()[:1000])
    row = console.find("tr.conversation")
    assert "window closes in 23 h 59 min" in row.text
    assert console.first("svg#conversation-chart") is not None
    console.driver.set_window_size(1280, 900)
    console.screenshot("inbox-desktop")
    console.driver.set_window_size(390, 1600)  # tall: no scrollbar narrows it
    fits_the_phone(console)
    console.screenshot("inbox-phone")
    console.driver.set_window_size(1280, 900)

    row.find_element(By.CSS_SELECTOR, "a.conversation-link").click()
    console.find("ol#thread")
    assert asking in console.text_of("ol#thread li.customer")
    assert console.text_of("#mode") == "waiting_human"
    console.find("#takeover-button").click()
    wait_until(lambda: console.text_of("#mode") == "human", lambda: console.text_of("#mode"))
    assert console.text_of("#owner") == ACCOUNT

    console.find("#reply-text").send_keys("Olá! Sou a Ana, vou ver o seu pedido.")
    console.find("#reply-button").click()
    wait_until(
        lambda: console.first("ol#thread li.agent") is not None,
        lambda: console.visible_text()[:1500],
    )
    page = console.path

    def delivered() -> bool:
        console.open(page)
        return console.text_of("ol#thread li.agent .state") == "sent"

    wait_until(delivered, lambda: console.text_of("ol#thread li.agent"))
    assert "Sou a Ana" in console.text_of("ol#thread li.agent .words")
    console.screenshot("conversation-desktop")
    console.driver.set_window_size(390, 1600)  # tall: no scrollbar narrows it
    fits_the_phone(console)
    console.screenshot("conversation-phone")
    console.driver.set_window_size(1280, 900)

    console.find("#release-button").click()
    wait_until(lambda: console.text_of("#mode") == "bot", lambda: console.text_of("#mode"))
    audit = [entry.text for entry in console.all("#audit .audit-entry")]
    assert [a.split(" · ", 2)[2] for a in audit[-3:]] == [
        "waiting_human -> human (operator_takeover)",
        "replied",
        "human -> bot (agent_release)",
    ]
    console.find("#release-button").click()
    notice = console.find("#notice")
    assert "cannot move to 'bot'" in notice.text
    console.screenshot("conversation-refused")


MEASURE = """
var root = document.documentElement;
var out = {page: root.scrollWidth, screen: root.clientWidth};
out.tables = Array.from(document.querySelectorAll('.card.latency')).map(function (card) {
  var c = card.getBoundingClientRect(), wrap = card.querySelector('.table-wrap');
  var t = card.querySelector('table').getBoundingClientRect();
  return {card: [c.left, c.right], table: [t.left, t.right],
          hidden: wrap.scrollWidth - wrap.clientWidth};
});
var card = document.getElementById('diagram'), d = card.getBoundingClientRect();
var box = document.querySelector('g.state[data-state="received"] rect').getBoundingClientRect();
var name = document.querySelector('g.state text.name').getBoundingClientRect();
out.diagram = {right: d.right, box: box.width, name: name.height,
               scrolls: card.scrollWidth > card.clientWidth};
return out;
"""


@pytest.mark.parametrize("width", [1440, 390])
def test_the_latency_tables_fit_their_cards_and_the_diagram_stays_readable(
    open_console: OpenConsole, width: int
) -> None:
    """At a desktop's 1440 px and a phone's 390 px the latency tables keep inside their
    cards (nothing hidden behind a scroll), the page never scrolls sideways, and the live
    machine is drawn at a readable size: a state's box at least 100 px wide and its name
    at least 8 px tall, the diagram's card scrolling sideways on the phone instead."""
    console = signed_in(open_console())
    post_texts(console.server, ["Oi, bom dia", "Qual o horário?"])
    wait_count(console, "sent", 2)
    console.driver.set_window_size(width, 1600)
    console.open("/ops")
    console.find(".card.latency table")
    found = console.script(MEASURE)
    console.screenshot(f"machine-{width}")
    assert found["page"] <= found["screen"], found
    assert len(found["tables"]) == 2, found
    for table in found["tables"]:
        assert table["card"][0] <= table["table"][0], table
        assert table["table"][1] <= table["card"][1], table
        assert table["hidden"] <= 1, table
    diagram = found["diagram"]
    assert diagram["right"] <= found["screen"] + 1, diagram
    assert diagram["box"] >= 100, diagram
    assert diagram["name"] >= 8, diagram
    assert diagram["scrolls"] == (width < 1000), diagram
