"""The task routes' guard through the real app: OIDC bearer tokens when a service account is
configured, X-Internal-Token otherwise; operator routes always on X-Internal-Token."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from pyloto_corp.bootstrap import Container, bootstrap
from pyloto_corp.config import ConfigError, Settings
from pyloto_corp.http.app import create_app
from tests.integration.oidc_support import (
    AUDIENCE,
    SERVICE_ACCOUNT,
    CertsServer,
    KeyPair,
    id_token_claims,
    pem_map,
    serve_certs,
)
from tests.support.helpers import INTERNAL_TOKEN
from tests.support.redis_server import free_port

pytestmark = pytest.mark.anyio

ADVANCE = "/internal/tasks/advance"
SWEEP = "/internal/sweep"
TASK = {"message_id": "wamid.ANY", "state": "received"}
TOKEN_HEADER = {"X-Internal-Token": INTERNAL_TOKEN}

Client = AsyncTestClient[Litestar]
OpenApp = Callable[..., AbstractAsyncContextManager[tuple[Client, Container]]]


@pytest.fixture(scope="module")
def key() -> KeyPair:
    """The key the local "Google" signs tokens with."""
    return KeyPair.generate()


@pytest.fixture
def certs(key: KeyPair) -> Iterator[CertsServer]:
    """The local certs endpoint."""
    with serve_certs(pem_map(key)) as server:
        yield server


@pytest.fixture
def open_app(make_settings: Callable[..., Settings]) -> OpenApp:
    """Start the app with extra variables: `async with open_app(VAR="x") as (client, c)`."""

    @asynccontextmanager
    async def open_with(**overrides: str) -> AsyncIterator[tuple[Client, Container]]:
        container = bootstrap(make_settings(**overrides))
        async with AsyncTestClient(app=create_app(container)) as client:
            yield client, container

    return open_with


def oidc_variables(certs_url: str, **extra: str) -> dict[str, str]:
    """The variables that turn OIDC on, with Google's certs served from `certs_url`."""
    return {
        "CLOUD_TASKS_SERVICE_ACCOUNT": SERVICE_ACCOUNT,
        "INTERNAL_TASK_BASE_URL": AUDIENCE,
        "GOOGLE_OIDC_CERTS_URL": certs_url,
        **extra,
    }


@pytest.fixture
async def oidc_app(open_app: OpenApp, certs: CertsServer) -> AsyncIterator[Client]:
    """The app with CLOUD_TASKS_SERVICE_ACCOUNT set and the local certs endpoint."""
    async with open_app(**oidc_variables(certs.url)) as (client, _):
        yield client


def bearer(token: str) -> dict[str, str]:
    """An Authorization header carrying `token`."""
    return {"Authorization": f"Bearer {token}"}


def valid_token(key: KeyPair, **overrides: object) -> str:
    """A token as Cloud Tasks would attach it for the configured service account."""
    return key.sign(id_token_claims(time.time(), **overrides))


async def test_a_task_with_a_valid_oidc_token_runs(oidc_app: Client, key: KeyPair) -> None:
    """Advance and sweep accept the service account's Google-signed token."""
    response = await oidc_app.post(ADVANCE, json=TASK, headers=bearer(valid_token(key)))
    assert response.status_code == 200
    assert response.json() == {"outcome": "unknown"}
    response = await oidc_app.post(SWEEP, headers=bearer(valid_token(key)))
    assert response.status_code == 200
    assert set(response.json()) == {"requeued", "purged", "released"}


@pytest.mark.parametrize("route", [ADVANCE, SWEEP])
@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="nothing"),
        pytest.param(TOKEN_HEADER, id="internal-token-only"),
        pytest.param({"Authorization": "Bearer "}, id="empty-bearer"),
        pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, id="basic"),
        pytest.param({"Authorization": INTERNAL_TOKEN}, id="no-scheme"),
    ],
)
async def test_a_task_without_a_bearer_token_is_401(
    oidc_app: Client, route: str, headers: dict[str, str]
) -> None:
    """With OIDC on, no bearer token is 401, and the shared X-Internal-Token no longer suffices."""
    response = await oidc_app.post(route, json=TASK, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"aud": "https://someone-else.a.run.app"}, id="audience"),
        pytest.param({"exp": int(time.time()) - 3600}, id="expired"),
        pytest.param({"email": "intruder@evil.iam.gserviceaccount.com"}, id="email"),
        pytest.param({"iss": "https://evil.example.com"}, id="issuer"),
    ],
)
async def test_a_task_with_an_invalid_token_is_403(
    oidc_app: Client, key: KeyPair, overrides: dict[str, object]
) -> None:
    """A signed token with a wrong claim is 403 and the task does not run."""
    headers = {**bearer(valid_token(key, **overrides)), **TOKEN_HEADER}
    response = await oidc_app.post(ADVANCE, json=TASK, headers=headers)
    assert response.status_code == 403
    assert "outcome" not in response.json()


async def test_a_token_from_another_signer_or_garbage_is_403(oidc_app: Client) -> None:
    """A token signed by a key Google never published, or no JWT at all, is 403."""
    stranger = KeyPair.generate()
    for token in (valid_token(stranger), "not.a.jwt", "garbage"):
        response = await oidc_app.post(SWEEP, headers=bearer(token))
        assert response.status_code == 403, token


async def test_the_rejection_reason_is_logged_without_the_token(
    oidc_app: Client, key: KeyPair, caplog: pytest.LogCaptureFixture
) -> None:
    """Operators see why a token was refused; the token itself is never logged."""
    token = valid_token(key, aud="https://someone-else.a.run.app")
    with caplog.at_level(logging.WARNING):
        await oidc_app.post(ADVANCE, json=TASK, headers=bearer(token))
    rejected = [r for r in caplog.records if getattr(r, "event", None) == "oidc_rejected"]
    assert [r.reason for r in rejected] == ["wrong audience"]  # type: ignore[attr-defined]
    assert token not in caplog.text


async def test_unreachable_certs_answer_503_so_the_queue_retries(
    open_app: OpenApp, key: KeyPair
) -> None:
    """When Google's keys cannot be fetched the task is answered 503 with Retry-After."""
    down = f"http://127.0.0.1:{free_port()}/oauth2/v1/certs"
    async with open_app(**oidc_variables(down)) as (client, _):
        response = await client.post(ADVANCE, json=TASK, headers=bearer(valid_token(key)))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"


async def test_a_configured_audience_replaces_the_base_url(
    open_app: OpenApp, certs: CertsServer, key: KeyPair
) -> None:
    """CLOUD_TASKS_OIDC_AUDIENCE is the audience checked; INTERNAL_TASK_BASE_URL then is not."""
    custom = "https://tasks.pyloto.example"
    variables = oidc_variables(certs.url, CLOUD_TASKS_OIDC_AUDIENCE=custom)
    async with open_app(**variables) as (client, _):
        accepted = await client.post(SWEEP, headers=bearer(valid_token(key, aud=custom)))
        refused = await client.post(SWEEP, headers=bearer(valid_token(key)))
    assert (accepted.status_code, refused.status_code) == (200, 403)


async def test_operator_routes_stay_on_the_internal_token(oidc_app: Client, key: KeyPair) -> None:
    """GET /internal/messages/{id} takes X-Internal-Token even with OIDC on, not a bearer."""
    route = "/internal/messages/wamid.ANY"
    assert (await oidc_app.get(route, headers=TOKEN_HEADER)).status_code == 404
    assert (await oidc_app.get(route, headers=bearer(valid_token(key)))).status_code == 401


async def test_without_oidc_the_internal_token_guards_the_task_routes(
    open_app: OpenApp, key: KeyPair
) -> None:
    """Without CLOUD_TASKS_SERVICE_ACCOUNT: the token works, a bearer token alone is 401."""
    async with open_app() as (client, container):
        assert container.oidc_verifier is None
        ok = await client.post(ADVANCE, json=TASK, headers=TOKEN_HEADER)
        wrong = await client.post(ADVANCE, json=TASK, headers={"X-Internal-Token": "wrong"})
        bearer_only = await client.post(ADVANCE, json=TASK, headers=bearer(valid_token(key)))
        sweep = await client.post(SWEEP, headers=TOKEN_HEADER)
    assert ok.status_code == 200
    assert ok.json() == {"outcome": "unknown"}
    assert (wrong.status_code, bearer_only.status_code, sweep.status_code) == (403, 401, 200)


async def test_stopping_the_app_closes_the_verifier_client(
    open_app: OpenApp, certs: CertsServer
) -> None:
    """The container builds the verifier only with OIDC on and closes its HTTP client on stop."""
    async with open_app(**oidc_variables(certs.url)) as (_, container):
        verifier = container.oidc_verifier
        assert verifier is not None
        assert not verifier.http.is_closed
    assert verifier.http.is_closed


def test_a_service_account_without_an_audience_refuses_to_start(
    make_settings: Callable[..., Settings],
) -> None:
    """OIDC needs an audience: the error names both variables that can give it."""
    with pytest.raises(ConfigError) as caught:
        make_settings(CLOUD_TASKS_SERVICE_ACCOUNT=SERVICE_ACCOUNT)
    message = str(caught.value)
    assert "CLOUD_TASKS_SERVICE_ACCOUNT" in message
    assert "CLOUD_TASKS_OIDC_AUDIENCE" in message
    assert "INTERNAL_TASK_BASE_URL" in message


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CLOUD_TASKS_SERVICE_ACCOUNT", "not-an-email"),
        ("GOOGLE_OIDC_CERTS_URL", "ftp://certs.example"),
    ],
)
def test_malformed_oidc_variables_are_refused(
    make_settings: Callable[..., Settings], variable: str, value: str
) -> None:
    """A service account that is no e-mail, or a certs URL that is no HTTP URL, is refused."""
    with pytest.raises(ConfigError, match=variable):
        make_settings(**{variable: value, "INTERNAL_TASK_BASE_URL": AUDIENCE})


def test_the_audience_defaults_to_the_task_base_url(
    make_settings: Callable[..., Settings],
) -> None:
    """Without CLOUD_TASKS_OIDC_AUDIENCE the tokens' audience is INTERNAL_TASK_BASE_URL."""
    settings = make_settings(
        CLOUD_TASKS_SERVICE_ACCOUNT=SERVICE_ACCOUNT, INTERNAL_TASK_BASE_URL=AUDIENCE
    )
    assert settings.queue.oidc_audience == AUDIENCE
    assert settings.queue.google_oidc_certs_url == "https://www.googleapis.com/oauth2/v1/certs"
