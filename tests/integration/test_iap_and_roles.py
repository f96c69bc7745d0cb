"""Cloud Run IAP's identity (OPS_TRUST_IAP): its ES256 assertion checked against keys served
over real HTTP, mapped to an existing account and its role; and `require_role` on routes of
the console and of /internal, for people and for the machine's token."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.auth import crypt, jwt
from litestar import Litestar, Request, get, post
from litestar.datastructures import State
from litestar.testing import AsyncTestClient

from pyloto_corp.adapters.google_iap import IAP_ISSUER, IapVerifier
from pyloto_corp.adapters.google_oidc import InvalidToken
from pyloto_corp.application.accounts import AGENT, OPERATOR
from pyloto_corp.bootstrap import bootstrap
from pyloto_corp.config import ConfigError, Settings, load_settings
from pyloto_corp.http.app import create_app
from pyloto_corp.http.ops import OpsController
from pyloto_corp.http.principal import Principal, principal_of, require_role
from tests.integration.oidc_support import CertsServer, serve_certs
from tests.support.accounts import ensure_account, post_sign_in
from tests.support.helpers import INTERNAL_TOKEN

pytestmark = pytest.mark.anyio

AUDIENCE = "/projects/123456/locations/europe-west1/services/pyloto"
PERSON = "ana@example.com"


class EcKey:
    """A P-256 key pair as IAP publishes one (its JWK) and signs with (google-auth's ES256)."""

    def __init__(self) -> None:
        self.kid = uuid.uuid4().hex
        self.private_key = ec.generate_private_key(ec.SECP256R1())

    def jwk(self) -> dict[str, str]:
        numbers = self.private_key.public_key().public_numbers()

        def b64(value: int) -> str:
            import base64

            return base64.urlsafe_b64encode(value.to_bytes(32, "big")).rstrip(b"=").decode()

        return {
            "kty": "EC",
            "crv": "P-256",
            "alg": "ES256",
            "kid": self.kid,
            "x": b64(numbers.x),
            "y": b64(numbers.y),
        }

    def sign(self, claims: dict[str, Any]) -> str:
        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        signer = crypt.ES256Signer.from_string(pem, key_id=self.kid)  # type: ignore[no-untyped-call]
        token: bytes = jwt.encode(signer, claims)  # type: ignore[no-untyped-call]
        return token.decode()


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": IAP_ISSUER,
        "aud": AUDIENCE,
        "sub": "accounts.google.com:1122334455",
        "email": PERSON,
        "iat": now,
        "exp": now + 600,
    }
    claims.update(overrides)
    return claims


@pytest.fixture(scope="module")
def key() -> EcKey:
    return EcKey()


@pytest.fixture
def keys_server(key: EcKey) -> CertsServer:
    with serve_certs({"keys": [key.jwk()]}) as server:
        yield server  # type: ignore[misc]


async def test_the_verifier_accepts_iap_assertions_only(
    key: EcKey, keys_server: CertsServer
) -> None:
    verifier = IapVerifier(AUDIENCE, keys_server.url, httpx.AsyncClient(timeout=5))
    try:
        assert (await verifier.verify(key.sign(_claims())))["email"] == PERSON
        for claims, reason in (
            (_claims(aud="/projects/1/other"), "wrong audience"),
            (_claims(iss="https://accounts.google.com"), "wrong issuer"),
            (_claims(exp=int(time.time()) - 3600), "expired"),
            (_claims(email=None), "missing email claim"),
        ):
            with pytest.raises(InvalidToken) as refused:
                await verifier.verify(key.sign(claims))
            assert refused.value.reason == reason
        with pytest.raises(InvalidToken):
            await verifier.verify(EcKey().sign(_claims()))  # a key IAP did not publish
        token = key.sign(_claims())
        head, body, signature = token.split(".")
        with pytest.raises(InvalidToken) as tampered:
            await verifier.verify(f"{head}.{body}.{signature[:-4]}AAAA")
        assert tampered.value.reason == "bad signature"
    finally:
        await verifier.close()


def test_trusting_iap_needs_its_audience() -> None:
    with pytest.raises(ConfigError, match="OPS_IAP_AUDIENCE"):
        load_settings({"OPS_TRUST_IAP": "true"})


@asynccontextmanager
async def _iap_app(
    make_settings: Callable[..., Settings], url: str
) -> AsyncIterator[AsyncTestClient]:  # type: ignore[type-arg]
    settings = make_settings(
        OPS_CONSOLE_ENABLED="true",
        OPS_TRUST_IAP="true",
        OPS_IAP_AUDIENCE=AUDIENCE,
        OPS_IAP_KEYS_URL=url,
    )
    await ensure_account(settings, PERSON, OPERATOR)
    async with AsyncTestClient(app=create_app(bootstrap(settings))) as client:
        yield client


async def test_iap_names_an_existing_account_and_its_role(
    make_settings: Callable[..., Settings], key: EcKey, keys_server: CertsServer
) -> None:
    async with _iap_app(make_settings, keys_server.url) as client:
        assertion = {"x-goog-iap-jwt-assertion": key.sign(_claims())}
        page = await client.get(
            "/ops",
            headers={
                **assertion,
                "x-goog-authenticated-user-email": f"accounts.google.com:{PERSON}",
            },
        )
        assert page.status_code == 200
        assert 'name="csrf"' in page.text
        assert (await client.get("/ops", headers=assertion)).status_code == 200
        other = {"x-goog-iap-jwt-assertion": key.sign(_claims(email="bia@example.com"))}
        assert (await client.get("/ops", headers=other)).status_code == 401  # no account
        mismatch = {**assertion, "x-goog-authenticated-user-email": "accounts.google.com:x@y.z"}
        assert (await client.get("/ops", headers=mismatch)).status_code == 401
        forged = {"x-goog-iap-jwt-assertion": EcKey().sign(_claims())}
        assert (await client.get("/ops", headers=forged)).status_code == 401
        # The header alone, without IAP's signature, names no one.
        header_only = {"x-goog-authenticated-user-email": f"accounts.google.com:{PERSON}"}
        assert (await client.get("/ops", headers=header_only)).status_code == 401


# --- require_role on routes -----------------------------------------------------------------


@get("/ops/agent-inbox", guards=[require_role(AGENT)])
async def _agent_page(request: Request[Any, Any, Any]) -> dict[str, str]:
    principal = await principal_of(request)
    assert isinstance(principal, Principal)
    return {"name": principal.name, "kind": principal.kind}


@post("/internal/agent-action", guards=[require_role(AGENT)], status_code=200)
async def _agent_action() -> dict[str, str]:
    return {"done": "yes"}


@get("/internal/operator-read", guards=[require_role(OPERATOR)])
async def _operator_read(request: Request[Any, Any, Any]) -> dict[str, str]:
    principal = await principal_of(request)
    assert isinstance(principal, Principal)
    return {"name": principal.name, "role": principal.role}


async def test_require_role_lets_agents_in_and_keeps_operators_and_strangers_out(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(OPS_CONSOLE_ENABLED="true")
    await ensure_account(settings, "agent.one", AGENT)
    await ensure_account(settings, "operator.one", OPERATOR)
    container = bootstrap(settings)
    app = Litestar(
        [_agent_page, _agent_action, _operator_read, OpsController],
        state=State({"container": container}),
    )
    async with AsyncTestClient(app=app) as client:
        assert (await client.get("/ops/agent-inbox")).status_code == 401
        token = {"X-Internal-Token": INTERNAL_TOKEN}
        assert (await client.get("/internal/operator-read", headers=token)).json() == {
            "name": "token",
            "role": OPERATOR,
        }
        assert (await client.get("/ops/agent-inbox", headers=token)).status_code == 403

        assert (await post_sign_in(client, "operator.one")).status_code == 303
        assert (await client.get("/ops/agent-inbox")).status_code == 403
        assert (await client.get("/internal/operator-read")).status_code == 200

        client.cookies.clear()
        assert (await post_sign_in(client, "agent.one")).status_code == 303
        inbox = await client.get("/ops/agent-inbox")
        assert inbox.json() == {"name": "agent.one", "kind": "session"}
        assert (await client.post("/internal/agent-action")).status_code == 403  # no CSRF
        found = re.search(r'name="csrf" value="([^"]+)"', (await client.get("/ops")).text)
        assert found
        done = await client.post("/internal/agent-action", headers={"X-CSRF-Token": found[1]})
        assert done.status_code == 200
