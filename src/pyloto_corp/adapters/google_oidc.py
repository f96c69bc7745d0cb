"""Google-signed OIDC ID tokens: the bearer tokens Cloud Tasks and Cloud Scheduler attach.

A token is accepted only when its RS256 signature matches one of Google's public keys and
its claims name Google as issuer, this service as audience, a verified e-mail of an allowed
service account, and a validity window that includes now (give or take a small clock skew).
Google's keys are fetched from `certs_url` (the PEM map of /oauth2/v1/certs or the JWKS of
/oauth2/v3/certs), kept for the response's Cache-Control max-age, and fetched again once
when a token names a key id the cache does not hold (Google rotates its keys).

google-auth checks the signature: each key becomes a `google.auth.crypt.RSAVerifier`, the
verifier `google.auth.jwt` uses for RS256. The rest of `google.auth.jwt.decode` is not used:
it reads the system clock only (the cache and the validity window here share one clock,
which tests move), insists on `iat`, and tells its failures apart only by message text,
where the reasons below (logged, and asserted by the tests) are part of the interface. The
claims it does not know (`email`, `email_verified`, the issuer) are checked here anyway.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey, RSAPublicNumbers
from google.auth import crypt

GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
GOOGLE_ISSUERS = frozenset({"https://accounts.google.com", "accounts.google.com"})
# Tolerates small clock differences between Google and this instance.
CLOCK_SKEW_SECONDS = 30.0
# Used when the certs response carries no max-age (Google's always does).
DEFAULT_CACHE_SECONDS = 300.0
# An unknown key id refetches the certs at most this often, so forged tokens with random
# key ids cannot turn each request into a call to Google.
REFETCH_COOLDOWN_SECONDS = 30.0
# Google's ID tokens are about 1 KB; anything far larger is not one.
MAX_TOKEN_CHARS = 16 * 1024
# Fetching the keys happens inside a task request, which Cloud Tasks gives minutes.
CERTS_TIMEOUT_SECONDS = 5.0

_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*(\d+)", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|[,\s])(?:no-store|no-cache)(?:$|[,\s])", re.IGNORECASE)


class InvalidToken(Exception):
    """The token is not an acceptable Google ID token; the reason never quotes the token."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CertsUnavailable(Exception):
    """Google's public keys could not be fetched, so no token can be checked right now."""


def _b64decode(segment: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise InvalidToken("malformed token") from None


def _json_object(segment: str) -> dict[str, Any]:
    try:
        value = json.loads(_b64decode(segment))
    except (ValueError, RecursionError):  # RecursionError: deeply nested arrays
        raise InvalidToken("malformed token") from None
    if not isinstance(value, dict):
        raise InvalidToken("malformed token")
    return value


def _split(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    """Header, claims, signing input and signature of a compact JWS (not yet verified)."""
    if len(token) > MAX_TOKEN_CHARS or not token.isascii() or token.count(".") != 2:
        raise InvalidToken("malformed token")
    header, claims, signature = token.split(".")
    return (
        _json_object(header),
        _json_object(claims),
        f"{header}.{claims}".encode(),
        _b64decode(signature),
    )


class SignatureVerifier(Protocol):
    """What pyloto uses of `google.auth.crypt.Verifier` (google-auth ships no type hints)."""

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether `signature` is this key's signature of `message`."""
        ...


def _rsa_verifier(key: object) -> SignatureVerifier:
    # google-auth's RSAVerifier takes any key object; only an RSA one can check RS256.
    if not isinstance(key, RSAPublicKey):
        raise ValueError("not an RSA key")
    verifier: SignatureVerifier = crypt.RSAVerifier(key)  # type: ignore[no-untyped-call]
    return verifier


def _pem_key(pem: str) -> SignatureVerifier:
    data = pem.encode()
    if b"BEGIN CERTIFICATE" in data:
        return _rsa_verifier(x509.load_pem_x509_certificate(data).public_key())
    return _rsa_verifier(serialization.load_pem_public_key(data))


def _b64_int(value: object) -> int:
    if not isinstance(value, str):
        raise ValueError("JWK number is not a string")
    return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")


def _jwks_keys(keys: object) -> dict[str, SignatureVerifier]:
    if not isinstance(keys, list):
        raise ValueError("JWKS keys is not a list")
    result: dict[str, SignatureVerifier] = {}
    for jwk in keys:
        if isinstance(jwk, dict) and jwk.get("kty") == "RSA" and isinstance(jwk.get("kid"), str):
            numbers = RSAPublicNumbers(_b64_int(jwk.get("e")), _b64_int(jwk.get("n")))
            result[jwk["kid"]] = _rsa_verifier(numbers.public_key())
    return result


def parse_certs(document: object) -> dict[str, SignatureVerifier]:
    """Key id → signature verifier, from Google's PEM map or a JWKS; ValueError if unusable."""
    if not isinstance(document, dict):
        raise ValueError("certs document is not an object")
    if "keys" in document:
        keys = _jwks_keys(document["keys"])
    else:
        keys = {kid: _pem_key(pem) for kid, pem in document.items() if isinstance(pem, str)}
    if not keys:
        raise ValueError("certs document holds no RSA key")
    return keys


def cache_seconds(cache_control: str | None) -> float:
    """How long a certs response may be kept, from its Cache-Control header."""
    if cache_control is None:
        return DEFAULT_CACHE_SECONDS
    if _NO_CACHE.search(cache_control):
        return 0.0
    found = _MAX_AGE.search(cache_control)
    return float(found.group(1)) if found else DEFAULT_CACHE_SECONDS


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidToken(f"malformed {name} claim")
    return float(value)


def create_http_client() -> httpx.AsyncClient:
    """The client that fetches Google's keys (built once, in bootstrap)."""
    return httpx.AsyncClient(timeout=CERTS_TIMEOUT_SECONDS)


def _text(claims: Mapping[str, Any], name: str) -> str | None:
    """A string claim, or None (other JSON types cannot be looked up in a set)."""
    value = claims.get(name)
    return value if isinstance(value, str) else None


class OidcVerifier:
    """Checks Google-signed ID tokens for one audience and a set of service accounts."""

    def __init__(
        self,
        audience: str,
        certs_url: str,
        allowed_emails: frozenset[str],
        http: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.time,
        clock_skew_seconds: float = CLOCK_SKEW_SECONDS,
    ) -> None:
        self.audience = audience
        self.certs_url = certs_url
        self.allowed_emails = allowed_emails
        self.http = http
        self._clock = clock
        self._skew = clock_skew_seconds
        self._keys: dict[str, SignatureVerifier] = {}
        self._fetched_at: float | None = None
        self._fresh_until = 0.0
        self._generation = 0
        self._lock = asyncio.Lock()

    # How a keys document becomes key id → verifier, and the one signing algorithm its
    # tokens may use (a subclass reads other keys: IAP's ES256).
    parse_keys = staticmethod(parse_certs)
    algorithm = "RS256"

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims if it is valid; InvalidToken or CertsUnavailable otherwise."""
        header, claims, signing_input, signature = _split(token)
        if header.get("alg") != self.algorithm:
            raise InvalidToken("unsupported algorithm")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise InvalidToken("missing key id")
        key = await self._key(kid)
        if not key.verify(signing_input, signature):
            raise InvalidToken("bad signature")
        self._check_claims(claims)
        return claims

    async def close(self) -> None:
        """Close the HTTP client this verifier was given (the container hands it over)."""
        await self.http.aclose()

    def _check_claims(self, claims: Mapping[str, Any]) -> None:
        if _text(claims, "iss") not in GOOGLE_ISSUERS:
            raise InvalidToken("wrong issuer")
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if self.audience not in audiences:
            raise InvalidToken("wrong audience")
        self._check_window(claims)
        verified = claims.get("email_verified")
        if verified is not True and verified != "true":
            raise InvalidToken("email not verified")
        if _text(claims, "email") not in self.allowed_emails:
            raise InvalidToken("not the configured service account")

    def _check_window(self, claims: Mapping[str, Any]) -> None:
        now = self._clock()
        expires = _number(claims, "exp")
        if expires is None:
            raise InvalidToken("missing exp claim")
        if now - self._skew >= expires:
            raise InvalidToken("expired")
        for name in ("nbf", "iat"):
            starts = _number(claims, name)
            if starts is not None and starts > now + self._skew:
                raise InvalidToken("not yet valid")

    async def _key(self, kid: str) -> SignatureVerifier:
        """The key named `kid`, refreshing the cache when stale or (once) when it lacks it."""
        if self._fetched_at is None or self._clock() >= self._fresh_until:
            await self._refresh()
        key = self._keys.get(kid)
        if key is None and self._may_refetch():
            await self._refresh()
            key = self._keys.get(kid)
        if key is None:
            raise InvalidToken("unknown key id")
        return key

    def _may_refetch(self) -> bool:
        return self._fetched_at is None or (
            self._clock() - self._fetched_at >= REFETCH_COOLDOWN_SECONDS
        )

    async def _refresh(self) -> None:
        seen = self._generation
        async with self._lock:
            if self._generation != seen:
                return  # a concurrent call refreshed while this one waited
            keys, max_age = await self._fetch()
            now = self._clock()
            self._keys = keys
            self._fetched_at = now
            self._fresh_until = now + max_age
            self._generation += 1

    async def _fetch(self) -> tuple[dict[str, SignatureVerifier], float]:
        try:
            response = await self.http.get(self.certs_url)
        except httpx.HTTPError as error:
            raise CertsUnavailable(
                f"cannot fetch {self.certs_url}: {type(error).__name__}"
            ) from None
        if response.status_code != 200:
            raise CertsUnavailable(f"{self.certs_url} answered {response.status_code}")
        try:
            keys = self.parse_keys(response.json())
        except (ValueError, TypeError) as error:
            raise CertsUnavailable(f"{self.certs_url} sent no usable keys: {error}") from None
        return keys, cache_seconds(response.headers.get("cache-control"))
