"""The operations console seen through a real browser: a `pyloto serve` with the console on,
a headless Chromium signed in to it, screenshots, and the checks every page must pass.

The browser is the system's Chromium driven by its ChromeDriver (tests/support/browser.py):
nothing is downloaded. Screenshots go to tests/artifacts/screenshots/ (git-ignored), one file
per page a test visits, named after the test.
"""

from __future__ import annotations

import base64
import re
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from pyloto_corp.observability.pii_scan import scan_lines
from tests.e2e.servers import ServeProcess, post_webhook
from tests.support.accounts import ACCOUNT, PASSWORD
from tests.support.helpers import (
    CONTACT_NAME,
    INTERNAL_TOKEN,
    REPO,
    SENDER,
    envelope,
    text_message,
)

SCREENSHOTS = REPO / "tests" / "artifacts" / "screenshots"
DOCS_SCREENSHOT = REPO / "docs" / "images" / "ops-console.png"
WAIT_SECONDS = 20.0
# The console's own variables: on (sign-in is with an account, tests/support/accounts.py).
CONSOLE_VARIABLES = {"OPS_CONSOLE_ENABLED": "true", "INTERNAL_TASK_TOKEN": INTERNAL_TOKEN}

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T | None], describe: Callable[[], str], seconds: float = WAIT_SECONDS
) -> T:
    """Poll `condition` until it returns something truthy (returned); fail after `seconds`
    with `describe()`, what was seen last."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            value = condition()
        except (NoSuchElementException, StaleElementReferenceException):
            value = None  # the page is being replaced or updated: look again
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {describe()}")
        time.sleep(0.05)


def post_texts(
    server: ServeProcess, texts: Iterable[str], sender: str = SENDER, name: str = CONTACT_NAME
) -> list[str]:
    """POST one signed webhook per text (each its own message, from `sender` whose profile
    name is `name`); their ids, in order."""
    ids: list[str] = []
    with httpx.Client(timeout=10) as client:
        for text in texts:
            message = text_message(text, sender=sender)
            response = post_webhook(
                client, server.url, envelope([message], sender=sender, name=name)
            )
            assert response.status_code == 200, response.text
            ids.append(str(message["id"]))
    return ids


class Console:
    """One browser on one server's console: navigation, sign-in, waits, screenshots."""

    def __init__(self, driver: WebDriver, server: ServeProcess, shots: str) -> None:
        self.driver = driver
        self.server = server
        self.shots = shots  # screenshot file name prefix (the test's name)
        self.taken: list[Path] = []

    # --- navigation -------------------------------------------------------------------------

    def url(self, path: str) -> str:
        """Absolute URL of a path on the server."""
        return f"{self.server.url}{path}"

    def open(self, path: str) -> None:
        """Load a page (a real navigation: scripts and timers start over)."""
        self.driver.get(self.url(path))

    @property
    def path(self) -> str:
        """The path (and query) the browser is on."""
        current = str(self.driver.current_url)
        return current.removeprefix(self.server.url)

    def sign_in(self, name: str = ACCOUNT, password: str = PASSWORD) -> None:
        """Fill and submit the sign-in form (from wherever the browser is)."""
        self.open("/ops/login")
        for field_name, value in (("name", name), ("password", password)):
            field = self.find(f"#signin input[name='{field_name}']")
            field.clear()
            field.send_keys(value)
        self.find("#signin-submit").click()

    # --- reading the page -------------------------------------------------------------------

    def find(self, css: str, seconds: float = WAIT_SECONDS) -> WebElement:
        """The first element matching `css`, waited for."""
        return wait_until(
            lambda: self.first(css),
            lambda: f"no {css!r} on {self.path}:\n{self.visible_text()[:2000]}",
            seconds,
        )

    def first(self, css: str) -> WebElement | None:
        """The first element matching `css` now, or None."""
        found = self.driver.find_elements(By.CSS_SELECTOR, css)
        return found[0] if found else None

    def all(self, css: str) -> list[WebElement]:
        """Every element matching `css` now."""
        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def text_of(self, css: str) -> str:
        """The text of the first element matching `css` (SVG text included), stripped; read
        again when the page was replaced between finding the element and reading it (a form
        just posted)."""
        for _ in range(5):
            element = self.find(css)
            try:
                return str(element.get_attribute("textContent") or "").strip()
            except WebDriverException as error:  # stale: the node left the document
                if "document" not in str(error) and not isinstance(
                    error, StaleElementReferenceException
                ):
                    raise
        element = self.find(css)
        return str(element.get_attribute("textContent") or "").strip()

    def visible_text(self) -> str:
        """What a person reads on the page."""
        body = self.driver.find_elements(By.TAG_NAME, "body")
        return str(body[0].text) if body else ""

    def source(self) -> str:
        """The page's HTML as it is now (after scripts changed it)."""
        html = self.driver.execute_script("return document.documentElement.outerHTML")
        return str(html)

    def script(self, code: str, *args: Any) -> Any:
        """Run JavaScript in the page."""
        return self.driver.execute_script(code, *args)

    # --- screenshots ------------------------------------------------------------------------

    def screenshot(self, label: str) -> Path:
        """Save the whole page, not only the window, as tests/artifacts/screenshots/..."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{self.shots}-{len(self.taken) + 1:02d}-{label}")
        path = SCREENSHOTS / f"{name}.png"
        size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True, "clip": clip},
        )
        path.write_bytes(base64.b64decode(shot["data"]))
        self.taken.append(path)
        return path

    def screenshot_for_docs(self, label: str) -> Path:
        """A screenshot, also copied to docs/images/ops-console.png (the README's picture)."""
        path = self.screenshot(label)
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_SCREENSHOT)
        return path


# --- personal data ----------------------------------------------------------------------


def personal_data_in(console: Console, forbidden: Mapping[str, str]) -> list[str]:
    """What of a page would expose a customer: anything `pyloto pii-scan`'s detector finds in
    its HTML or visible text, and any value of `forbidden` (what it is → the value: a name, a
    raw phone) as written, in any case."""
    html, text = console.source(), console.visible_text()
    problems = [f"{console.path} html {finding}" for finding in scan_lines(html.splitlines())]
    problems += [f"{console.path} text {finding}" for finding in scan_lines(text.splitlines())]
    for what, value in forbidden.items():
        for where, content in (("html", html), ("text", text)):
            at = content.casefold().find(value.casefold())
            if at >= 0:
                context = content[max(0, at - 40) : at].replace("\n", " ")
                problems.append(f"{console.path} {where} shows {what} after {context!r}")
    return problems
