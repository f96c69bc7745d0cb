"""Shared fixtures: settings on a temporary SQLite file, a running container, an app client,
the peers (Redis, OpenAI, Graph) and the service's log lines."""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import hypothesis
import pytest
from litestar.testing import AsyncTestClient

from pyloto_corp.bootstrap import Container, bootstrap
from pyloto_corp.config import Settings, load_settings
from pyloto_corp.devtools.fake_openai import FakeOpenAI
from pyloto_corp.http.app import create_app
from pyloto_corp.observability.logging import JsonFormatter
from tests.e2e.servers import SERVER_LOGS
from tests.e2e.support import not_the_test_client
from tests.support.fake_graph import FakeGraph
from tests.support.helpers import APP_SECRET, INTERNAL_TOKEN, VERIFY_TOKEN
from tests.support.log_guard import IdentifierGuard, identifiers_in
from tests.support.redis_server import RedisServer
from tests.support.running import running

# Property tests run the same examples on every machine and every run: a failure in CI is a
# failure here, with no example database to carry from one machine to another.
hypothesis.settings.register_profile(
    "pyloto", derandomize=True, database=None, deadline=None, max_examples=100, print_blob=True
)
hypothesis.settings.load_profile("pyloto")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that can drive Chromium (it uses the `chrome` fixture, or its module holds
    Selenium) is marked `browser`, so `-m "not browser"` runs on a machine without one."""
    unmarked = [
        item.nodeid
        for item in items
        if isinstance(item, pytest.Function)
        and item.get_closest_marker("browser") is None
        and ("chrome" in item.fixturenames or _holds_selenium(item.module))
    ]
    if unmarked:
        raise pytest.UsageError(
            "tests that need Chromium without the `browser` marker: " + ", ".join(unmarked)
        )


def _holds_selenium(module: object) -> bool:
    return any(
        str(getattr(value, "__module__", "")).startswith("selenium")
        for value in vars(module).values()
    )


def pytest_addoption(parser: pytest.Parser) -> None:
    """`--update-docs-screenshot`: the ops console's browser test of the machine page also
    writes docs/images/ops-console.png, the console's picture in the README and docs/console.md."""
    parser.addoption(
        "--update-docs-screenshot",
        action="store_true",
        help="write docs/images/ops-console.png from the ops console browser test",
    )


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio, as the service does."""
    return "asyncio"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One private redis-server for the session; tests isolate themselves by key prefix."""
    with running(RedisServer(tmp_path_factory.mktemp("redis"))) as server:
        yield server


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, which the test may stop and restart."""
    with running(RedisServer(tmp_path / "redis")) as server:
        yield server


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A local OpenAI-compatible server (`pyloto fake-openai`) of this test's own."""
    with running(FakeOpenAI()) as server:
        yield server


@pytest.fixture
def graph() -> Iterator[FakeGraph]:
    """A local Graph API server of this test's own; no request it received may have broken
    WhatsApp's schema."""
    with running(FakeGraph()) as server:
        yield server
    assert server.violations == []


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix no other test uses."""
    return f"test-{uuid.uuid4().hex}"


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Build settings from variables, on a private database and with fast retries."""

    def create(**overrides: str) -> Settings:
        environ = {
            "STATE_SQLITE_PATH": str(tmp_path / "pyloto.db"),
            "WHATSAPP_APP_SECRET": APP_SECRET,
            "WHATSAPP_VERIFY_TOKEN": VERIFY_TOKEN,
            "INTERNAL_TASK_TOKEN": INTERNAL_TOKEN,
            "LOCAL_QUEUE_MIN_BACKOFF_SECONDS": "0.01",
            "LOCAL_QUEUE_MAX_BACKOFF_SECONDS": "0.05",
            # One reply per message, as most tests expect: tests/e2e/test_bursts.py
            # turns burst coalescing on.
            "BURST_QUIET_SECONDS": "0",
            **overrides,
        }
        return load_settings(environ)

    return create


@pytest.fixture
async def container(make_settings: Callable[..., Settings]) -> AsyncIterator[Container]:
    """A started container on embedded defaults."""
    built = bootstrap(make_settings())
    await built.start()
    yield built
    await built.stop()


@pytest.fixture
async def client(
    make_settings: Callable[..., Settings],
) -> AsyncIterator[AsyncTestClient]:  # type: ignore[type-arg]
    """An HTTP client on the app (its lifespan starts and stops the container)."""
    app = create_app(bootstrap(make_settings()))
    async with AsyncTestClient(app=app) as test_client:
        yield test_client


@pytest.fixture(autouse=True)
def no_message_id_or_bsuid_in_a_log_line() -> Iterator[None]:
    """No log line of any test carries a wamid (it encodes the sender's number) or a BSUID
    in clear: the service refers to a message by its `ref` and masks the rest itself."""
    guard = IdentifierGuard()
    servers_before = len(SERVER_LOGS)
    root = logging.getLogger()
    level = root.level
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    root.addHandler(guard)
    try:
        yield
    finally:
        root.removeHandler(guard)
        root.setLevel(level)
    for log in SERVER_LOGS[servers_before:]:  # the `pyloto serve` processes it started
        guard.found += identifiers_in(log)
    assert guard.found == [], "wamid or BSUID in a log line:\n" + "\n".join(guard.found[:5])


@pytest.fixture
def log_lines(caplog: pytest.LogCaptureFixture) -> Iterator[io.StringIO]:
    """Every record (DEBUG and up) of every logger but the test's HTTP client's, formatted by
    the service's JsonFormatter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.DEBUG)
    handler.addFilter(not_the_test_client)
    caplog.set_level(logging.DEBUG)  # the root level, restored after the test
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
