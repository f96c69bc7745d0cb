"""The console's sealed links: what its pages put in a URL in place of a message id.

A WhatsApp message id encodes the sender's phone number, so it never appears in a page or
a URL in clear: links carry it sealed with AES-GCM (an AEAD from `cryptography`), under a
key derived (HKDF-SHA256) from the internal token, so every instance opens the links of the
others, and rotating the token invalidates every link.

Sessions are no longer a signed cookie: the cookie holds a random id the state store knows
(application/signin.py), so there is nothing here to sign or encrypt for them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

COOKIE = "pyloto_ops"
_NONCE = 12
_TAG = 16
# Bound to every sealed value: a ciphertext made for anything else never opens as a link.
_CONTEXT = b"pyloto-ops-link"


def _derive(root: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(root)


class ConsoleKeys:
    """Keys of one internal token: sealed links, and the CSRF tokens of IAP's principals."""

    def __init__(self, internal_token: str) -> None:
        root = internal_token.encode()
        self._aead = AESGCM(_derive(root, b"pyloto-ops-seal-v2"))
        self._csrf = _derive(root, b"pyloto-ops-iap-csrf")

    def seal(self, text: str) -> str:
        """`text` encrypted and authenticated, as URL-safe base64."""
        nonce = secrets.token_bytes(_NONCE)  # random: never twice under one key
        sealed = self._aead.encrypt(nonce, text.encode(), _CONTEXT)
        return base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")

    def unseal(self, token: str) -> str | None:
        """The text `seal` sealed, or None for anything else (tampered, foreign, garbage)."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) < _NONCE + _TAG:
            return None
        try:
            data = self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], _CONTEXT)
        except InvalidTag:
            return None
        try:
            return data.decode()
        except UnicodeDecodeError:
            return None

    def iap_csrf(self, name: str) -> str:
        """The CSRF token of an account signed in by IAP (which gives no session of ours)."""
        return hmac.new(self._csrf, f"csrf:{name}".encode(), hashlib.sha256).hexdigest()[:40]
