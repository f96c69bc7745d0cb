"""End-to-end fixtures: a driver over the real app, apps with other settings, a clean CLI env."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from pyloto_corp.bootstrap import bootstrap
from pyloto_corp.config import Settings
from pyloto_corp.http.app import create_app
from tests.e2e.support import SETTINGS_VARIABLES, Pyloto
from tests.helpers import APP_SECRET, INTERNAL_TOKEN, VERIFY_TOKEN

OpenPyloto = Callable[..., AbstractAsyncContextManager[Pyloto]]


@pytest.fixture
async def pyloto(client: AsyncTestClient) -> Pyloto:  # type: ignore[type-arg]
    """The app on embedded defaults (SQLite in tmp, local queue, dry-run outbox)."""
    return Pyloto(client)


@pytest.fixture
def open_pyloto(make_settings: Callable[..., Settings]) -> OpenPyloto:
    """Start the app with extra variables: `async with open_pyloto(VAR="x") as app: ...`."""

    @asynccontextmanager
    async def open_app(**overrides: str) -> AsyncIterator[Pyloto]:
        app = create_app(bootstrap(make_settings(**overrides)))
        async with AsyncTestClient(app=app) as test_client:
            yield Pyloto(test_client)

    return open_app


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A tmp working directory and a process environment with only the test's variables.

    Returns the variables so subprocesses can be given the same environment.
    """
    for name in SETTINGS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    variables = {
        "STATE_SQLITE_PATH": str(tmp_path / "state" / "pyloto.db"),
        "WHATSAPP_APP_SECRET": APP_SECRET,
        "WHATSAPP_VERIFY_TOKEN": VERIFY_TOKEN,
        "INTERNAL_TASK_TOKEN": INTERNAL_TOKEN,
        "LOCAL_QUEUE_MIN_BACKOFF_SECONDS": "0.05",
        "LOCAL_QUEUE_MAX_BACKOFF_SECONDS": "0.5",
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return variables
