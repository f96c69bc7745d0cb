"""Console accounts: named people with a role, their passwords, sessions and sign-in limits.

A person signs in to the console with an account's name and password (never the machine's
INTERNAL_TASK_TOKEN). Roles nest: `agent` may do everything `operator` may, and more.

Passwords are hashed with scrypt (a standard memory-hard KDF from the standard library), a
random salt per account, its parameters stored with the hash, compared in constant time.
A session is a random id in an HttpOnly cookie; the store holds only the id's SHA-256 (a
copy of the store lets no one sign in), with its account, role, CSRF token and end. Signing
out, `pyloto users revoke` and removing the account delete its sessions, so an old cookie is
refused however it was kept.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Protocol

OPERATOR = "operator"
AGENT = "agent"
# Each role with the roles it includes (agent ⊇ operator).
ROLES: dict[str, frozenset[str]] = {
    OPERATOR: frozenset({OPERATOR}),
    AGENT: frozenset({OPERATOR, AGENT}),
}

# Lowercase letters, digits and . _ @ + - (an e-mail fits, for IAP); never blank.
_NAME = re.compile(r"[a-z0-9][a-z0-9._@+-]{0,127}")
MIN_PASSWORD = 8
# scrypt's cost does not grow with the password, but a megabyte of form is refused unread.
MAX_PASSWORD = 1024

# scrypt at N=2^14, r=8, p=1 (16 MB, tens of ms): the parameters of RFC 7914 for interactive
# sign-in. They are stored with each hash, so raising them later leaves old hashes valid.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
_KEY_BYTES = 32
_SALT_BYTES = 16
# A stored hash asking for more than this is refused rather than computed.
_MAX_N = 2**20


class AccountError(ValueError):
    """A name, role or password that cannot be used; the message never quotes the password."""


def role_includes(held: str, wanted: str) -> bool:
    """Whether an account of role `held` may do what `wanted` may."""
    return wanted in ROLES.get(held, frozenset())


def account_name(name: str) -> str:
    """`name` as accounts are keyed (lowercase), or AccountError."""
    folded = name.strip().lower()
    if not _NAME.fullmatch(folded):
        raise AccountError(
            "an account name is 1-128 of a-z 0-9 . _ @ + - and starts with a letter or digit"
        )
    return folded


def check_role(role: str) -> str:
    """`role` if it is one, else AccountError."""
    if role not in ROLES:
        raise AccountError(f"the role is one of {', '.join(sorted(ROLES))}")
    return role


def account_ref(name: str) -> str:
    """A short stand-in for an account name in logs (a name can be a person's e-mail)."""
    return hashlib.sha256(f"pyloto-account|{name}".encode()).hexdigest()[:12]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str) -> str:
    """The stored form of `password`: `scrypt$N$r$p$salt$key`."""
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise AccountError(f"a password is {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    salt = secrets.token_bytes(_SALT_BYTES)
    key = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, _KEY_BYTES)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` is the one `stored` was made from (constant-time compare); False
    for a stored value this version cannot read."""
    try:
        kind, n, r, p, salt, key = stored.split("$")
        cost, block, threads = int(n), int(r), int(p)
        wanted = _unb64(key)
        if kind != "scrypt" or not 1 < cost <= _MAX_N or not 0 < block * threads <= 64:
            return False
        given = _scrypt(password, _unb64(salt), cost, block, threads, len(wanted))
    except ValueError:
        return False
    return hmac.compare_digest(given, wanted)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, size: int) -> bytes:
    data = password.encode("utf-8", "surrogatepass")
    return hashlib.scrypt(data, salt=salt, n=n, r=r, p=p, dklen=size, maxmem=256 * 1024 * 1024)


@functools.cache
def decoy_hash() -> str:
    """Checked against when the account does not exist, so an unknown name costs the same
    time as a wrong password and does not tell which names exist (made on first use)."""
    return hash_password(secrets.token_urlsafe(16))


def session_key(session_id: str) -> str:
    """What the store keys a session by: the SHA-256 of the cookie's id, never the id."""
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()


def new_session_id() -> str:
    """A session id for a cookie: 256 random bits."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Account:
    """One person who may use the console."""

    name: str
    role: str
    password_hash: str
    created_at: float


@dataclass(frozen=True)
class Session:
    """A signed-in browser: `key` is `session_key` of its cookie's id."""

    key: str
    name: str
    role: str
    csrf: str
    expires_at: float


class AccountStore(Protocol):
    """Where accounts, sessions and the counts of failed sign-ins are kept (the state store:
    SQLite or Redis), so every instance sees the same ones."""

    async def add_account(self, account: Account) -> bool:
        """Store a new account; False (nothing written) if the name is taken."""

    async def get_account(self, name: str) -> Account | None:
        """The account of this name, or None."""

    async def list_accounts(self) -> list[Account]:
        """Every account, by name."""

    async def remove_account(self, name: str) -> bool:
        """Delete the account and every session of it; False if there was none."""

    async def add_session(self, session: Session, now: float) -> None:
        """Store a session until its `expires_at` (and forget those ended by `now`)."""

    async def get_session(self, key: str, now: float) -> Session | None:
        """The session of this key, unless it has ended (or never was)."""

    async def delete_session(self, key: str) -> None:
        """End one session (signing out); nothing if it is gone already."""

    async def revoke_sessions(self, name: str) -> int:
        """End every session of the account `name`; how many there were."""

    async def count_failure(self, key: str, window_seconds: float, now: float) -> int:
        """Count one failed sign-in under `key` in the fixed window of `window_seconds`
        holding `now`; the window's count with it. A window's count is kept until the end of
        the window after it (the limits read both)."""

    async def failures(self, key: str, window_seconds: float, now: float) -> int:
        """The failed sign-ins counted under `key` in the window holding `now`."""

    async def close(self) -> None:
        """Release what the store opened for accounts (not the state store's own)."""
