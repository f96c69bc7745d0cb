"""Local stand-ins for Google's ID-token machinery: key pairs, signed tokens, a certs server.

Tokens are signed with google-auth's own encoder (an implementation independent of the
verifier under test) and the keys are served over real HTTP, as
https://www.googleapis.com/oauth2/v1/certs serves them (a PEM certificate per key id) or
as a JWKS (v3/certs).
"""

from __future__ import annotations

import base64
import datetime
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

from pyloto_corp.devtools.local_http import LocalServer

SERVICE_ACCOUNT = "pyloto-tasks@pyloto-test.iam.gserviceaccount.com"
AUDIENCE = "https://pyloto-test.a.run.app"


def _b64_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass(frozen=True)
class KeyPair:
    """An RSA key pair with the key id Google would publish it under."""

    kid: str
    private_key: rsa.RSAPrivateKey

    @classmethod
    def generate(cls) -> KeyPair:
        """A fresh 2048-bit key with a random key id."""
        return cls(uuid.uuid4().hex, rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def certificate_pem(self) -> str:
        """A self-signed certificate of the public key, as in Google's v1 certs map."""
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "securetoken.test")])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.private_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=14))
            .sign(self.private_key, hashes.SHA256())
        )
        return certificate.public_bytes(serialization.Encoding.PEM).decode()

    def jwk(self) -> dict[str, str]:
        """The public key as a JWK, as in Google's v3 certs JWKS."""
        numbers = self.private_key.public_key().public_numbers()
        return {
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": self.kid,
            "n": _b64_uint(numbers.n),
            "e": _b64_uint(numbers.e),
        }

    def sign(self, claims: dict[str, Any], kid: str | None = None) -> str:
        """An RS256 token over `claims`, its header naming `kid` (default: this key's)."""
        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        signer = crypt.RSASigner.from_string(pem, key_id=kid or self.kid)  # type: ignore[no-untyped-call]
        token: bytes = jwt.encode(signer, claims)  # type: ignore[no-untyped-call]
        return token.decode()


def pem_map(*keys: KeyPair) -> dict[str, str]:
    """Google's v1 certs document: key id → PEM certificate."""
    return {key.kid: key.certificate_pem() for key in keys}


def jwks(*keys: KeyPair) -> dict[str, Any]:
    """Google's v3 certs document: a JWKS."""
    return {"keys": [key.jwk() for key in keys]}


def id_token_claims(now: float, **overrides: Any) -> dict[str, Any]:
    """The claims of a Cloud Tasks OIDC token for the test service account, valid for 1 h."""
    claims: dict[str, Any] = {
        "iss": "https://accounts.google.com",
        "aud": AUDIENCE,
        "azp": "112233445566778899000",
        "sub": "112233445566778899000",
        "email": SERVICE_ACCOUNT,
        "email_verified": True,
        "iat": int(now),
        "exp": int(now) + 3600,
    }
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


@dataclass
class CertsServer:
    """What the local certs endpoint serves, and how many times it was asked."""

    url: str
    document: Any = None
    status: int = 200
    cache_control: str | None = "public, max-age=3600, must-revalidate, no-transform"
    requests: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self) -> None:
        """Record one request (called from the server thread)."""
        with self._lock:
            self.requests += 1


def _handler(state: CertsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.count()
            body = json.dumps(state.document).encode()
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            if state.cache_control is not None:
                self.send_header("Cache-Control", state.cache_control)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Keep the test output quiet."""

    return Handler


@contextmanager
def serve_certs(document: Any) -> Iterator[CertsServer]:
    """A real HTTP server on 127.0.0.1 serving `document` (changeable through the state)."""
    state = CertsServer(url="", document=document)
    server = LocalServer(_handler(state))
    state.url = f"{server.url}/oauth2/v1/certs"
    try:
        yield state
    finally:
        server.stop()
