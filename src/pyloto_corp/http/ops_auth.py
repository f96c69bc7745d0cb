"""The console's sign-in session, CSRF tokens and sealed message links.

Everything is keyed by the internal token (INTERNAL_TASK_TOKEN), so rotating the token
signs every operator out and invalidates every link. The cookie holds an expiry and its
HMAC, never the token.

A WhatsApp message id encodes the sender's phone number, so it never appears in a page or
a URL in clear: links carry it sealed (encrypted and authenticated with keys derived from
the token: an HMAC-SHA256 keystream, then an HMAC tag over nonce and ciphertext).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

COOKIE = "pyloto_ops"
SESSION_SECONDS = 12 * 3600
_NONCE = 12
_TAG = 16


class ConsoleKeys:
    """Keys of one internal token: session signatures, CSRF tokens, sealed links."""

    def __init__(self, internal_token: str) -> None:
        root = internal_token.encode()
        self._session = hmac.new(root, b"pyloto-ops-session", hashlib.sha256).digest()
        self._seal = hmac.new(root, b"pyloto-ops-seal", hashlib.sha256).digest()
        self._mac = hmac.new(root, b"pyloto-ops-mac", hashlib.sha256).digest()
        self._token = root

    def token_matches(self, given: str) -> bool:
        """Whether `given` is the internal token (constant-time)."""
        return hmac.compare_digest(given.encode(), self._token)

    def session(self, now: float) -> str:
        """A new session cookie value, valid for SESSION_SECONDS."""
        expires = int(now) + SESSION_SECONDS
        return f"{expires}.{self._sign(f'session:{expires}')}"

    def session_valid(self, value: str | None, now: float) -> bool:
        """Whether the cookie value is a session this token signed and it has not expired."""
        if not value:
            return False
        expires, _, signature = value.partition(".")
        # ASCII digits only (`²` is a digit to isdigit, not to int), and few enough to read.
        if not (expires.isascii() and expires.isdigit() and len(expires) <= 12):
            return False
        if int(expires) <= now:
            return False
        return _same(signature, self._sign(f"session:{expires}"))

    def csrf(self, session: str) -> str:
        """The CSRF token of a session: forms carry it, POSTs must return it."""
        return self._sign(f"csrf:{session}")

    def csrf_valid(self, session: str, given: str | None) -> bool:
        """Whether `given` is the CSRF token of `session`."""
        return bool(given) and _same(str(given), self.csrf(session))

    def _sign(self, text: str) -> str:
        return hmac.new(self._session, text.encode(), hashlib.sha256).hexdigest()[:40]

    def seal(self, text: str) -> str:
        """`text` encrypted and authenticated, as URL-safe base64."""
        nonce = secrets.token_bytes(_NONCE)
        data = text.encode()
        cipher = bytes(a ^ b for a, b in zip(data, self._stream(nonce, len(data)), strict=True))
        tag = hmac.new(self._mac, nonce + cipher, hashlib.sha256).digest()[:_TAG]
        return base64.urlsafe_b64encode(nonce + cipher + tag).decode().rstrip("=")

    def unseal(self, token: str) -> str | None:
        """The text `seal` sealed, or None for anything else (tampered, foreign, garbage)."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except ValueError:
            return None
        if len(raw) < _NONCE + _TAG:
            return None
        nonce, cipher, tag = raw[:_NONCE], raw[_NONCE:-_TAG], raw[-_TAG:]
        expected = hmac.new(self._mac, nonce + cipher, hashlib.sha256).digest()[:_TAG]
        if not hmac.compare_digest(tag, expected):
            return None
        data = bytes(a ^ b for a, b in zip(cipher, self._stream(nonce, len(cipher)), strict=True))
        try:
            return data.decode()
        except UnicodeDecodeError:
            return None

    def _stream(self, nonce: bytes, size: int) -> bytes:
        blocks = []
        for counter in range((size + 31) // 32):
            block = nonce + counter.to_bytes(4, "big")
            blocks.append(hmac.new(self._seal, block, hashlib.sha256).digest())
        return b"".join(blocks)[:size]


def _same(given: str, expected: str) -> bool:
    """Constant-time equality of a value a client sent and ours; compared as UTF-8 bytes,
    since `hmac.compare_digest` refuses strings with non-ASCII characters."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode())
