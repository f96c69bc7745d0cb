"""OidcVerifier against locally signed tokens and a real local certs server."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from pyloto_corp.adapters.google_oidc import (
    REFETCH_COOLDOWN_SECONDS,
    CertsUnavailable,
    InvalidToken,
    OidcVerifier,
)
from tests.integration.oidc_support import (
    AUDIENCE,
    SERVICE_ACCOUNT,
    CertsServer,
    KeyPair,
    id_token_claims,
    jwks,
    pem_map,
    serve_certs,
)
from tests.support.redis_server import free_port

pytestmark = pytest.mark.anyio


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


MakeVerifier = Callable[[str], OidcVerifier]


@pytest.fixture(scope="module")
def key() -> KeyPair:
    """The key Google signs with (generated once: RSA key generation is slow)."""
    return KeyPair.generate()


@pytest.fixture(scope="module")
def other_key() -> KeyPair:
    """A second key pair: Google's next key, or an attacker's."""
    return KeyPair.generate()


@pytest.fixture
def clock() -> Clock:
    """The verifier's clock."""
    return Clock()


@pytest.fixture
def certs(key: KeyPair) -> Iterator[CertsServer]:
    """A local certs endpoint serving `key` in Google's v1 PEM form."""
    with serve_certs(pem_map(key)) as server:
        yield server


@pytest.fixture
async def make_verifier(clock: Clock) -> AsyncIterator[MakeVerifier]:
    """Build verifiers on a given certs URL; their HTTP clients are closed afterwards."""
    built: list[OidcVerifier] = []

    def create(certs_url: str) -> OidcVerifier:
        verifier = OidcVerifier(
            AUDIENCE,
            certs_url,
            frozenset({SERVICE_ACCOUNT}),
            httpx.AsyncClient(timeout=5),
            clock=clock,
        )
        built.append(verifier)
        return verifier

    yield create
    for verifier in built:
        await verifier.close()


@pytest.fixture
def verifier(make_verifier: MakeVerifier, certs: CertsServer) -> OidcVerifier:
    """A verifier on the local certs endpoint."""
    return make_verifier(certs.url)


async def _reason(verifier: OidcVerifier, token: str) -> str:
    with pytest.raises(InvalidToken) as caught:
        await verifier.verify(token)
    assert token not in str(caught.value) or not token
    return caught.value.reason


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def _segment(value: Any) -> str:
    return _b64(json.dumps(value))


async def test_a_valid_token_is_accepted_and_its_claims_returned(
    verifier: OidcVerifier, key: KeyPair, clock: Clock
) -> None:
    """A token Google's key signed for this audience and service account is accepted."""
    claims = await verifier.verify(key.sign(id_token_claims(clock.now)))
    assert claims["email"] == SERVICE_ACCOUNT
    assert claims["aud"] == AUDIENCE


async def test_the_jwks_form_of_the_certs_is_understood(
    make_verifier: MakeVerifier, key: KeyPair, clock: Clock
) -> None:
    """Keys served as a JWKS (Google's v3 endpoint) verify tokens like the PEM map does."""
    with serve_certs(jwks(key)) as server:
        claims = await make_verifier(server.url).verify(key.sign(id_token_claims(clock.now)))
    assert claims["email"] == SERVICE_ACCOUNT


async def test_the_issuer_without_scheme_is_accepted(
    verifier: OidcVerifier, key: KeyPair, clock: Clock
) -> None:
    """Google issues some tokens as `accounts.google.com`; both spellings are Google."""
    token = key.sign(id_token_claims(clock.now, iss="accounts.google.com"))
    assert (await verifier.verify(token))["iss"] == "accounts.google.com"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        pytest.param({"aud": "https://someone-else.a.run.app"}, "wrong audience", id="audience"),
        pytest.param({"aud": None}, "wrong audience", id="no-audience"),
        pytest.param({"iss": "https://evil.example.com"}, "wrong issuer", id="issuer"),
        pytest.param({"iss": None}, "wrong issuer", id="no-issuer"),
        pytest.param({"iss": ["https://accounts.google.com"]}, "wrong issuer", id="issuer-list"),
        pytest.param(
            {"email": "someone@pyloto-test.iam.gserviceaccount.com"},
            "not the configured service account",
            id="email",
        ),
        pytest.param({"email": None}, "not the configured service account", id="no-email"),
        pytest.param(
            {"email": {"value": SERVICE_ACCOUNT}},
            "not the configured service account",
            id="email-object",
        ),
        pytest.param({"email_verified": False}, "email not verified", id="unverified"),
        pytest.param({"email_verified": None}, "email not verified", id="no-email-verified"),
        pytest.param({"email_verified": 1}, "email not verified", id="email-verified-number"),
        pytest.param({"exp": None}, "missing exp claim", id="no-exp"),
        pytest.param({"exp": "tomorrow"}, "malformed exp claim", id="exp-string"),
    ],
)
async def test_tokens_with_wrong_claims_are_rejected(
    verifier: OidcVerifier,
    key: KeyPair,
    clock: Clock,
    overrides: dict[str, Any],
    reason: str,
) -> None:
    """A correctly signed token is still rejected when a claim is wrong, with the reason."""
    token = key.sign(id_token_claims(clock.now, **overrides))
    assert await _reason(verifier, token) == reason


async def test_an_expired_token_is_rejected_beyond_the_clock_skew(
    verifier: OidcVerifier, key: KeyPair, clock: Clock
) -> None:
    """A token expired 10 s ago passes (30 s skew); one expired 31 s ago is rejected."""
    token = key.sign(id_token_claims(clock.now - 3600, exp=int(clock.now) - 10))
    assert await verifier.verify(token)
    clock.now += 21
    assert await _reason(verifier, token) == "expired"


@pytest.mark.parametrize("claim", ["nbf", "iat"])
async def test_a_token_from_the_future_is_rejected_beyond_the_clock_skew(
    verifier: OidcVerifier, key: KeyPair, clock: Clock, claim: str
) -> None:
    """A token valid from 60 s ahead is rejected as not yet valid, and accepted 31 s later."""
    start = int(clock.now) + 60
    token = key.sign(id_token_claims(clock.now, **{claim: start}))
    assert await _reason(verifier, token) == "not yet valid"
    clock.now = start - 29
    assert await verifier.verify(token)


async def test_a_token_signed_by_another_key_is_rejected(
    verifier: OidcVerifier, key: KeyPair, other_key: KeyPair, clock: Clock
) -> None:
    """A token that names Google's key id but was signed by another key fails the signature."""
    forged = other_key.sign(id_token_claims(clock.now), kid=key.kid)
    assert await _reason(verifier, forged) == "bad signature"


async def test_a_token_whose_claims_were_altered_is_rejected(
    verifier: OidcVerifier, key: KeyPair, clock: Clock
) -> None:
    """Swapping the signed claims for other ones breaks the signature."""
    header, _, signature = key.sign(id_token_claims(clock.now, aud="https://other")).split(".")
    altered = f"{header}.{_segment(id_token_claims(clock.now))}.{signature}"
    assert await _reason(verifier, altered) == "bad signature"


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        pytest.param("", "malformed token", id="empty"),
        pytest.param("not-a-token", "malformed token", id="one-segment"),
        pytest.param("a.b", "malformed token", id="two-segments"),
        pytest.param("a.b.c.d", "malformed token", id="four-segments"),
        pytest.param("%%%.%%%.%%%", "malformed token", id="not-base64"),
        pytest.param(f"{_segment([1])}.{_segment({})}.c2ln", "malformed token", id="header-list"),
        pytest.param(
            f"{_segment({'alg': 'RS256'})}.bm90IGpzb24.c2ln", "malformed token", id="body"
        ),
        pytest.param("é" * 10 + ".a.b", "malformed token", id="not-ascii"),
        pytest.param("a" * 20000 + ".b.c", "malformed token", id="too-long"),
        pytest.param(
            f"{_segment({'alg': 'RS256', 'kid': 'k'})}.{_b64('[' * 9000)}.c2ln",
            "malformed token",
            id="deeply-nested",
        ),
        pytest.param(
            f"{_segment({'alg': 'none', 'kid': 'k'})}.{_segment({})}.",
            "unsupported algorithm",
            id="alg-none",
        ),
        pytest.param(
            f"{_segment({'alg': 'HS256', 'kid': 'k'})}.{_segment({})}.c2ln",
            "unsupported algorithm",
            id="alg-hs256",
        ),
        pytest.param(
            f"{_segment({'alg': 'RS256'})}.{_segment({})}.c2ln", "missing key id", id="no-kid"
        ),
    ],
)
async def test_malformed_tokens_are_rejected(
    verifier: OidcVerifier, token: str, reason: str
) -> None:
    """Anything that is not a compact RS256 JWS with a key id is rejected before any check."""
    assert await _reason(verifier, token) == reason


async def test_certs_are_cached_for_their_max_age(
    verifier: OidcVerifier, certs: CertsServer, key: KeyPair, clock: Clock
) -> None:
    """Verifications reuse the fetched keys until Cache-Control max-age runs out."""
    certs.cache_control = "public, max-age=600"
    for _ in range(3):
        await verifier.verify(key.sign(id_token_claims(clock.now)))
    assert certs.requests == 1
    clock.now += 599
    await verifier.verify(key.sign(id_token_claims(clock.now)))
    assert certs.requests == 1
    clock.now += 2
    await verifier.verify(key.sign(id_token_claims(clock.now)))
    assert certs.requests == 2


async def test_certs_marked_no_cache_are_fetched_for_every_token(
    verifier: OidcVerifier, certs: CertsServer, key: KeyPair, clock: Clock
) -> None:
    """A no-cache certs response is not reused."""
    certs.cache_control = "no-cache, no-store"
    await verifier.verify(key.sign(id_token_claims(clock.now)))
    await verifier.verify(key.sign(id_token_claims(clock.now)))
    assert certs.requests == 2


async def test_an_unknown_key_id_refetches_the_certs_once(
    verifier: OidcVerifier, certs: CertsServer, key: KeyPair, other_key: KeyPair, clock: Clock
) -> None:
    """A rotated-in key is found by one refetch; a key id Google never published costs at
    most one refetch per cooldown, however many tokens name it."""
    await verifier.verify(key.sign(id_token_claims(clock.now)))
    assert certs.requests == 1
    certs.document = pem_map(key, other_key)
    clock.now += REFETCH_COOLDOWN_SECONDS
    assert await verifier.verify(other_key.sign(id_token_claims(clock.now)))
    assert certs.requests == 2

    unknown = key.sign(id_token_claims(clock.now), kid="never-published")
    assert await _reason(verifier, unknown) == "unknown key id"
    assert certs.requests == 2  # refetched moments ago: not again
    clock.now += REFETCH_COOLDOWN_SECONDS
    unknown = key.sign(id_token_claims(clock.now), kid="never-published")
    for _ in range(3):
        assert await _reason(verifier, unknown) == "unknown key id"
    assert certs.requests == 3


async def test_unreachable_certs_raise_the_unavailable_error(
    make_verifier: MakeVerifier, key: KeyPair, clock: Clock
) -> None:
    """With nothing listening at the certs URL the verifier says unavailable, not invalid."""
    verifier = make_verifier(f"http://127.0.0.1:{free_port()}/oauth2/v1/certs")
    with pytest.raises(CertsUnavailable):
        await verifier.verify(key.sign(id_token_claims(clock.now)))


@pytest.mark.parametrize(
    ("status", "document"),
    [
        pytest.param(500, {"error": "backend"}, id="server-error"),
        pytest.param(200, ["not", "a", "map"], id="not-an-object"),
        pytest.param(200, {}, id="no-keys"),
        pytest.param(200, {"k": "-----BEGIN CERTIFICATE-----\ngarbage"}, id="bad-pem"),
        pytest.param(200, {"keys": [{"kty": "RSA", "kid": "k", "n": 1, "e": 2}]}, id="bad-jwk"),
    ],
)
async def test_unusable_certs_responses_raise_the_unavailable_error(
    make_verifier: MakeVerifier, key: KeyPair, clock: Clock, status: int, document: Any
) -> None:
    """An error status or a document without usable keys is unavailability, not a bad token."""
    with serve_certs(document) as server:
        server.status = status
        verifier = make_verifier(server.url)
        with pytest.raises(CertsUnavailable):
            await verifier.verify(key.sign(id_token_claims(clock.now)))


async def test_an_outage_is_not_cached(
    verifier: OidcVerifier, certs: CertsServer, key: KeyPair, clock: Clock
) -> None:
    """Once the certs endpoint answers again the next token is checked normally."""
    certs.status = 503
    with pytest.raises(CertsUnavailable):
        await verifier.verify(key.sign(id_token_claims(clock.now)))
    certs.status = 200
    assert await verifier.verify(key.sign(id_token_claims(clock.now)))
    assert certs.requests == 2
