"""Cloud Run IAP's signed assertion (X-Goog-IAP-JWT-Assertion): who IAP let through.

IAP signs a JWT with ES256 for every request it forwards. It is accepted only when its
signature matches one of IAP's public keys (the JWKS at OPS_IAP_KEYS_URL), its issuer is IAP,
its audience this service's (OPS_IAP_AUDIENCE) and its validity window includes now; its
`email` claim then names the person. The key cache, its refresh and the validity window are
the OIDC verifier's (google_oidc.py), which this one extends with EC keys and IAP's claims.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from pyloto_corp.adapters.google_oidc import (
    InvalidToken,
    OidcVerifier,
    SignatureVerifier,
    _text,
)

IAP_ISSUER = "https://cloud.google.com/iap"
IAP_KEYS_URL = "https://www.gstatic.com/iap/verify/public_key-jwk"
_COORDINATE = 32  # bytes of a P-256 coordinate, and of each half of an ES256 signature


class _EcVerifier:
    """An ES256 check with one P-256 public key (a JWS signature is r and s, 32 bytes each)."""

    def __init__(self, key: ec.EllipticCurvePublicKey) -> None:
        self.key = key

    def verify(self, message: bytes, signature: bytes) -> bool:
        if len(signature) != 2 * _COORDINATE:
            return False
        r = int.from_bytes(signature[:_COORDINATE], "big")
        s = int.from_bytes(signature[_COORDINATE:], "big")
        try:
            self.key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True


def _coordinate(value: object) -> int:
    if not isinstance(value, str):
        raise ValueError("JWK coordinate is not a string")
    return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")


def parse_iap_keys(document: object) -> dict[str, SignatureVerifier]:
    """Key id → ES256 verifier, from IAP's JWKS; ValueError if it holds no P-256 key."""
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise ValueError("IAP keys document holds no key list")
    result: dict[str, SignatureVerifier] = {}
    for jwk in keys:
        if not isinstance(jwk, dict) or jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
            continue
        kid = jwk.get("kid")
        if isinstance(kid, str):
            numbers = ec.EllipticCurvePublicNumbers(
                _coordinate(jwk.get("x")), _coordinate(jwk.get("y")), ec.SECP256R1()
            )
            result[kid] = _EcVerifier(numbers.public_key())
    if not result:
        raise ValueError("IAP keys document holds no P-256 key")
    return result


class IapVerifier(OidcVerifier):
    """Checks IAP's assertions for one audience; `verify` returns the claims (`email`)."""

    parse_keys = staticmethod(parse_iap_keys)
    algorithm = "ES256"

    def __init__(
        self,
        audience: str,
        keys_url: str,
        http: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(audience, keys_url, frozenset(), http, clock=clock)

    def _check_claims(self, claims: Mapping[str, Any]) -> None:
        if _text(claims, "iss") != IAP_ISSUER:
            raise InvalidToken("wrong issuer")
        if _text(claims, "aud") != self.audience:
            raise InvalidToken("wrong audience")
        self._check_window(claims)
        if not _text(claims, "email"):
            raise InvalidToken("missing email claim")
