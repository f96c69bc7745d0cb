"""Signing in to the console and what a session is: the use case behind /ops/login, /ops/logout,
the session cookie and `pyloto users`.

Failed sign-ins are counted in the state store, per client address and per account, in fixed
windows (so the limits hold across instances); a limit applies to the current window and the
one before it together, so an attack does not start afresh at a window's edge. Over a limit,
a sign-in is refused before its password is even checked. The keys of those counts are
hashes: neither an address nor a name is stored in clear.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from pyloto_corp.application.accounts import (
    Account,
    AccountError,
    AccountStore,
    Session,
    account_name,
    check_role,
    decoy_hash,
    hash_password,
    new_session_id,
    session_key,
    verify_password,
)

# A session's lifetime unless OPS_SESSION_HOURS says otherwise.
DEFAULT_SESSION_SECONDS = 12 * 3600


@dataclass(frozen=True)
class SignInLimits:
    """Failed sign-ins allowed per account and per client address, each in its window."""

    per_account: int = 5
    account_window_seconds: float = 300.0
    per_client: int = 20
    client_window_seconds: float = 60.0


class SignInRefused(Exception):
    """A sign-in that did not open a session: `reason` is `bad_credentials` (unknown name or
    wrong password, told apart only in `detail`, never to the client) or
    `rate_limited_account` / `rate_limited_client`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail or reason

    @property
    def rate_limited(self) -> bool:
        """Whether it was refused for too many failures, not for these credentials."""
        return self.reason.startswith("rate_limited")


@dataclass(frozen=True)
class SignedIn:
    """A new session: `session_id` goes in the cookie (and nowhere else)."""

    session_id: str
    session: Session


def _limit_key(kind: str, value: str) -> str:
    return hashlib.sha256(f"pyloto-signin|{kind}|{value}".encode()).hexdigest()[:32]


class Accounts:
    """Accounts, sign-in and sessions over one AccountStore."""

    def __init__(
        self,
        store: AccountStore,
        session_seconds: float = DEFAULT_SESSION_SECONDS,
        limits: SignInLimits | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.session_seconds = session_seconds
        self.limits = limits or SignInLimits()
        self.clock = clock

    async def add(self, name: str, role: str, password: str) -> Account:
        """A new account; AccountError for a bad name, role or password, or a taken name."""
        account = Account(
            name=account_name(name),
            role=check_role(role),
            password_hash=await asyncio.to_thread(hash_password, password),
            created_at=self.clock(),
        )
        if not await self.store.add_account(account):
            raise AccountError(f"an account named {account.name!r} exists already")
        return account

    async def remove(self, name: str) -> bool:
        """Delete the account and its sessions; False if there was none."""
        return await self.store.remove_account(account_name(name))

    async def revoke(self, name: str) -> int:
        """End every session of the account; how many."""
        return await self.store.revoke_sessions(account_name(name))

    async def sign_in(self, name: str, password: str, client: str) -> SignedIn:
        """A new session for these credentials, or SignInRefused."""
        now = self.clock()
        limits = self.limits
        client_key = _limit_key("client", client)
        try:
            folded = account_name(name)
        except AccountError:
            folded = ""
        account_key = _limit_key("account", folded)
        if await self._failures(client_key, limits.client_window_seconds) >= limits.per_client:
            raise SignInRefused("rate_limited_client")
        if folded and (
            await self._failures(account_key, limits.account_window_seconds) >= limits.per_account
        ):
            raise SignInRefused("rate_limited_account")
        account = await self.store.get_account(folded) if folded else None
        stored = account.password_hash if account is not None else decoy_hash()
        matches = await asyncio.to_thread(verify_password, password[:4096], stored)
        if account is None or not matches:
            await self.store.count_failure(client_key, limits.client_window_seconds, now)
            if folded:
                await self.store.count_failure(account_key, limits.account_window_seconds, now)
            raise SignInRefused(
                "bad_credentials", "unknown_account" if account is None else "wrong_password"
            )
        return await self.open_session(account)

    async def _failures(self, key: str, window_seconds: float) -> int:
        """The failures under `key` in this window and the one before it."""
        now = self.clock()
        current = await self.store.failures(key, window_seconds, now)
        return current + await self.store.failures(key, window_seconds, now - window_seconds)

    async def open_session(self, account: Account) -> SignedIn:
        """A new session of `account` (a fresh random id each time)."""
        session_id = new_session_id()
        now = self.clock()
        session = Session(
            key=session_key(session_id),
            name=account.name,
            role=account.role,
            csrf=secrets.token_urlsafe(32),
            expires_at=now + self.session_seconds,
        )
        await self.store.add_session(session, now)
        return SignedIn(session_id, session)

    async def session(self, session_id: str | None) -> Session | None:
        """The live session of a cookie's id, or None (absent, forged, ended or revoked)."""
        if not session_id or len(session_id) > 256:
            return None
        return await self.store.get_session(session_key(session_id), self.clock())

    async def sign_out(self, session: Session) -> None:
        """End `session`: its cookie and CSRF token are refused from now on."""
        await self.store.delete_session(session.key)
