"""A hypothesis-driven fuzzer against the console (/ops) and the internal routes of the real
app: generated query strings, forms, cookies, headers, path parameters, JSON bodies and
sealed tokens (opened by the console's own keys, holding odd texts).

The property: whatever a request holds, the answer is never a 5xx, and no ERROR line is
written. Header bytes reach the app as a network client sends them (Latin-1), through an
ASGI transport on the test client's own event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from pyloto_corp.bootstrap import bootstrap
from pyloto_corp.config import Settings
from pyloto_corp.http.app import create_app
from pyloto_corp.http.ops_auth import COOKIE, ConsoleKeys
from tests.support.accounts import ACCOUNT, PASSWORD, ensure_account
from tests.support.helpers import (
    INTERNAL_TOKEN,
    SENDER,
    encode,
    envelope,
    realistic_wamid,
    signed_headers,
    text_message,
)

FUZZ = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
KEYS = ConsoleKeys(INTERNAL_TOKEN)
WAMID = realistic_wamid(SENDER)

# Text a client may put anywhere: any character (a lone surrogate too), digits that are not
# ASCII, separators the parsers split on, long runs.
odd_text = (
    st.text(max_size=16)
    | st.sampled_from(
        ["", " ", "²³", "٣", "é", "\x00", "\ud83d", "%", "%ff", "&", "=", ";", "|", ".", "-1"]
    )
    | st.sampled_from(["nan", "inf", "1e309", "9" * 40, "A" * 3000, WAMID, "wamid.NONE"])
)
# What a sealed token may hold: a cursor, a message id, or anything else, sealed by the
# console's own keys (so it opens), or a garbled one.
sealed_texts = st.sampled_from(
    [WAMID, "wamid.NONE", "1.5|" + WAMID, "nan|x", "inf|x", "1e309|x", "|", "x|y", ""]
) | odd_text.map(lambda text: text.encode("utf-8", "surrogatepass").decode("utf-8", "replace"))
tokens = sealed_texts.map(KEYS.seal) | odd_text
# Latin-1 text: what one header value can carry.
latin1 = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=24)


def _query(values: dict[str, str]) -> str:
    return "&".join(
        f"{quote(k.encode('utf-8', 'surrogatepass'))}={quote(v.encode('utf-8', 'surrogatepass'))}"
        for k, v in values.items()
    )


console_query = st.dictionaries(
    st.sampled_from(["state", "reason", "since", "until", "before", "before"]),
    tokens | st.sampled_from(["sent", "failed", "2026-01-01T00:00", "2026-13-40T99:99"]),
    max_size=6,
).map(_query) | odd_text.map(lambda t: t.encode("utf-8", "surrogatepass").decode("latin-1"))
console_form = st.dictionaries(
    st.sampled_from(["token", "csrf", "id", "message", "all", "confirm", "text"]) | odd_text,
    tokens | st.sampled_from(["yes", "1", INTERNAL_TOKEN, WAMID]),
    max_size=6,
)
# Digits a cookie's expiry may be written in: not ASCII, or too many to read as a number.
odd_digits = st.sampled_from(["²³", "٣٣", "9" * 5000, "-1", "", "1e9", "0x1"]) | latin1


def _cookies(session: str) -> st.SearchStrategy[str | None]:
    """The session cookie, none, one with odd parts, or any Latin-1 text."""
    expires, _, signature = session.partition(".")
    return st.one_of(
        st.sampled_from([session, session, None]),
        st.builds(lambda e, s: f"{e}.{s}", odd_digits, st.just(signature) | latin1),
        st.builds(lambda s: f"{expires}.{s}", latin1 | st.just(signature + "é")),
        latin1,
    )


def _header(text: str) -> bytes:
    """A header value's bytes: Latin-1 where it can be, else UTF-8 (read back as Latin-1)."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


@dataclass
class Sent:
    """One generated request."""

    method: str
    path: str
    query: str = ""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""


CONSOLE_ROUTES = [
    ("GET", "/ops"),
    ("GET", "/ops/login"),
    ("GET", "/ops/records"),
    ("GET", "/ops/dead-letters"),
    ("GET", "/ops/api/summary"),
    ("GET", "/ops/costs"),
    ("GET", "/ops/messages/{}"),
    ("GET", "/ops/static/{}"),
    ("POST", "/ops/login"),
    ("POST", "/ops/logout"),
    ("POST", "/ops/search"),
    ("POST", "/ops/replay"),
    ("GET", "/ops/inbox"),
    ("GET", "/ops/inbox/{}"),
    ("POST", "/ops/inbox/{}/takeover"),
    ("POST", "/ops/inbox/{}/release"),
    ("POST", "/ops/inbox/{}/reply"),
]
INTERNAL_ROUTES = [
    ("POST", "/internal/tasks/advance"),
    ("POST", "/internal/sweep"),
    ("POST", "/internal/replay"),
    ("GET", "/internal/messages/"),
]


@st.composite
def console_requests(draw: st.DrawFn, method: str, template: str, session: str, csrf: str) -> Sent:
    """A request to a console route, signed in or not, with an odd query, form or cookie."""
    path = template.format(quote(draw(tokens).encode("utf-8", "surrogatepass"), safe=""))
    cookie = draw(_cookies(session))
    headers = [(b"cookie", _header(f"{COOKIE}={cookie}"))] if cookie else []
    if draw(st.booleans()):
        headers.append(
            (b"origin", draw(st.sampled_from(["http://x", "null"]) | latin1).encode("latin-1"))
        )
    body = b""
    if method == "POST":
        form = draw(console_form)
        if draw(st.booleans()):
            form["csrf"] = draw(st.sampled_from([csrf, csrf + "é", "é" * 40]))
        for number in range(draw(st.sampled_from([0, 0, 0, 15, 21, 100]))):
            form[f"f{number}"] = "x"  # more fields than any form has
        body = _query(form).encode()
        if draw(st.booleans()):
            body += b"&" + draw(st.binary(max_size=64)).replace(b"&", b"")  # odd bytes too
        headers.append((b"content-type", b"application/x-www-form-urlencoded"))
    return Sent(method, path, draw(console_query) if method == "GET" else "", headers, body)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | odd_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(odd_text, inner, max_size=3),
    max_leaves=8,
)
message_ids = st.sampled_from([WAMID, "wamid.NONE"]) | odd_text
# A task's body, well-formed but for what it names.
task_bodies = st.fixed_dictionaries(
    {
        "message_id": message_ids,
        "state": st.sampled_from(["received", "sending", "sent", "failed"]) | odd_text,
    }
)
internal_bodies = st.one_of(
    task_bodies,
    # A replay's, in the shapes it refuses and the ones it takes.
    st.fixed_dictionaries(
        {},
        optional={
            "message_id": message_ids | json_values,
            "failed": st.booleans() | json_values,
            "since": st.floats() | json_values,
        },
    ),
    json_values,
)


@st.composite
def internal_requests(draw: st.DrawFn, method: str, path: str) -> Sent:
    """A request to an internal route with the token (or an odd one), odd body and headers."""
    if method == "GET":
        path += quote(
            draw(odd_text).encode("utf-8", "surrogatepass"), safe=draw(st.sampled_from(["", "/%"]))
        )
    token = draw(st.sampled_from([INTERNAL_TOKEN, INTERNAL_TOKEN, INTERNAL_TOKEN, ""]) | latin1)
    headers = [(b"x-internal-token", token.encode("latin-1"))]
    for name in ("x-cloudtasks-taskretrycount", "traceparent"):
        if draw(st.booleans()):
            value = draw(st.sampled_from(["0", "3", "²", "¹²", "²", "99999999"]))
            value = draw(st.sampled_from([value, value, value]) | latin1)
            headers.append((name.encode(), value.encode("latin-1")))
    bodies = task_bodies | internal_bodies if path.endswith("/advance") else internal_bodies
    body = b"" if method == "GET" else json.dumps(draw(bodies)).encode()
    headers.append((b"content-type", b"application/json"))
    return Sent(method, path, "", headers, body)


class _Errors(logging.Handler):
    """Keeps the ERROR records the app writes."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Console:
    """The running app, a signed-in session and its CSRF token, and the ERROR records."""

    client: TestClient  # type: ignore[type-arg]
    session: str
    csrf: str
    errors: _Errors

    def send(self, sent: Sent) -> httpx.Response:
        """`sent`, header bytes as given, on the app's own event loop."""

        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.client.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://x") as http:
                # What may stand in a query on the wire: other bytes percent-encoded, but a `%`
                # kept, so broken escapes (`%zz`, `%ff`) arrive as written.
                query = quote(sent.query.encode("latin-1"), safe="=&;%+/?,:@")
                url = httpx.URL(f"http://x{sent.path}", query=query.encode())
                request = http.build_request(
                    sent.method, url, content=sent.body, headers=sent.headers
                )
                return await http.send(request)

        return self.client.blocking_portal.call(call)


@pytest.fixture
def console(make_settings: Callable[..., Settings]) -> Iterator[Console]:
    """The app with the console on and a record in it, signed in once for all examples."""
    settings = make_settings(OPS_CONSOLE_ENABLED="true")
    asyncio.run(ensure_account(settings))
    app = create_app(bootstrap(settings))
    errors = _Errors()
    logging.getLogger().addHandler(errors)
    try:
        with TestClient(app=app) as client:
            body = encode(envelope([text_message("Olá", message_id=WAMID)]))
            assert client.post("/webhook", content=body, headers=signed_headers(body)).is_success
            signed = client.post(
                "/ops/login",
                data={"name": ACCOUNT, "password": PASSWORD},
                follow_redirects=False,
            )
            session = signed.cookies[COOKIE]
            page = client.get("/ops")
            found = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert found
            yield Console(client, session, found.group(1), errors)
    finally:
        logging.getLogger().removeHandler(errors)


def _answered_without_a_server_error(console: Console, sent: Sent) -> None:
    console.errors.records.clear()
    response = console.send(sent)
    described = f"{sent.method} {sent.path}?{sent.query[:200]} -> {response.status_code}"
    assert response.status_code < 500, f"{described}: {response.text[:300]}"
    assert response.status_code != 400 or response.text, described
    errors = [r.getMessage() for r in console.errors.records]
    assert errors == [], f"{described}: ERROR {errors}"


@pytest.mark.parametrize(("method", "route"), CONSOLE_ROUTES)
@FUZZ
@given(data=st.data())
def test_no_console_request_gets_a_server_error(
    console: Console, method: str, route: str, data: st.DataObject
) -> None:
    sent = data.draw(console_requests(method, route, console.session, console.csrf))
    _answered_without_a_server_error(console, sent)


@pytest.mark.parametrize(("method", "route"), INTERNAL_ROUTES)
@FUZZ
@given(data=st.data())
def test_no_internal_request_gets_a_server_error(
    console: Console, method: str, route: str, data: st.DataObject
) -> None:
    _answered_without_a_server_error(console, data.draw(internal_requests(method, route)))
