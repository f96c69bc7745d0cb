"""Console accounts, sessions and failed sign-ins in the Redis store (redis-py client).

Their keys are listed here, beside the statements that write them, under the store's prefix
(REDIS_KEY_PREFIX). What must change together (an account and its sessions) changes in one
Lua script (scripts/accounts/*.lua), so no instance sees an account gone and its sessions open.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError

from pyloto_corp.adapters.redis.scripts import assemble, folder, names
from pyloto_corp.application.accounts import Account, Session
from pyloto_corp.application.ports import StoreUnavailable


@dataclass(frozen=True)
class AccountKeys:
    """Key names of the console's accounts under one prefix."""

    prefix: str = "pyloto"

    @property
    def names(self) -> str:
        """Set of every account name (for `pyloto users list`); no TTL, as accounts."""
        return f"{self.prefix}:ops:accounts"

    def account(self, name: str) -> str:
        """Hash of one account (r: role, h: password hash, t: created at); no TTL: it lives
        until `pyloto users remove`."""
        return f"{self.prefix}:ops:account:{name}"

    def session(self, key: str) -> str:
        """Hash of one session (n: account, r: role, c: CSRF token, e: end), `key` the hash of
        its cookie's id; expires at its end, so an ended session is gone by itself."""
        return f"{self.prefix}:ops:session:{key}"

    def sessions_of(self, name: str) -> str:
        """Set of the session keys of one account, to revoke them; expires with its latest
        session, members of ended ones are dropped when a new one is added."""
        return f"{self.prefix}:ops:sessions:{name}"

    def failures(self, key: str, bucket: int) -> str:
        """Count of failed sign-ins of one hashed key in one fixed window; expires at the end
        of the window after it (the limits read the previous window too)."""
        return f"{self.prefix}:ops:signin-failures:{key}:{bucket}"


# The scripts of accounts (scripts/accounts/*.lua, apart from the store's own scripts/*.lua),
# read by the same loader when this module is imported.
_SCRIPTS = folder().joinpath("accounts")
BODIES: dict[str, str] = {name: assemble(name, _SCRIPTS) for name in names(_SCRIPTS)}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisAccounts:
    """AccountStore on the Redis store's client."""

    def __init__(self, client: redis.Redis, prefix: str = "pyloto") -> None:
        self.client = client
        self.keys = AccountKeys(prefix)
        self._add = client.register_script(BODIES["ops_account_add"])
        self._revoke = client.register_script(BODIES["ops_account_end"])
        self._session = client.register_script(BODIES["ops_session_add"])

    async def add_account(self, account: Account) -> bool:
        keys = [self.keys.account(account.name), self.keys.names]
        args = [account.name, account.role, account.password_hash, repr(account.created_at)]
        try:
            return bool(await self._add(keys=keys, args=args))
        except RedisError as error:
            raise StoreUnavailable(f"redis: {error}") from error

    async def get_account(self, name: str) -> Account | None:
        try:
            found = await self.client.hgetall(self.keys.account(name))
        except RedisError as error:
            raise StoreUnavailable(f"redis: {error}") from error
        return self._account(name, found)

    @staticmethod
    def _account(name: str, found: dict[Any, Any]) -> Account | None:
        if not found:
            return None
        return Account(name, _text(found[b"r"]), _text(found[b"h"]), float(found[b"t"]))

    async def list_accounts(self) -> list[Account]:
        try:
            names = sorted(_text(n) for n in await self.client.smembers(self.keys.names))
            async with self.client.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.hgetall(self.keys.account(name))
                rows = await pipe.execute()
        except RedisError as error:
            raise StoreUnavailable(f"redis: {error}") from error
        accounts = [self._account(n, row) for n, row in zip(names, rows, strict=True)]
        return [a for a in accounts if a is not None]

    async def _end(self, name: str, remove: bool) -> int:
        keys = [self.keys.sessions_of(name), self.keys.account(name), self.keys.names]
        args = [self.keys.session(""), "1" if remove else "0", name]
        try:
            return int(await self._revoke(keys=keys, args=args))
        except RedisError as error:
            raise StoreUnavailable(f"redis: {error}") from error

    async def remove_account(self, name: str) -> bool:
        return await self._end(name, remove=True) >= 0

    async def revoke_sessions(self, name: str) -> int:
        return await self._end(name, remove=False)

    async def add_session(self, session: Session, now: float) -> None:
        keys = [self.keys.session(session.key), self.keys.sessions_of(session.name)]
        end = session.expires_at
        args: list[str | int] = [session.name, session.role, session.csrf, repr(end)]
        args.append(math.ceil(end * 1000))
        args += [self.keys.session(""), session.key, math.ceil((end - now) * 1000)]
        try:
            await self._session(keys=keys, args=args)
        except RedisError as error:
            raise StoreUnavailable(f"redis: {error}") from error

    async def get_session(self, key: str, now: float) -> Session | None:
        try:
            found = await self.client.hgetall(self.keys.session(key))
        except RedisError as error:
            raise StoreUnavailable(f"redis: {error}") from error
        if not found or float(found[b"e"]) <= now:
            return None
        return Session(
            key, _text(found[b"n"]), _text(found[b"r"]), _text(found[b"c"]), float(found[b"e"])
        )

    async def delete_session(self, key: str) -> None:
        # Its member of sessions_of goes when the account's next session is added.
        try:
            await self.client.delete(self.keys.session(key))
        except RedisError as error:
            raise StoreUnavailable(f"redis: {error}") from error

    async def count_failure(self, key: str, window_seconds: float, now: float) -> int:
        bucket = math.floor(now / window_seconds)
        name = self.keys.failures(key, bucket)
        ends_ms = math.ceil((bucket + 2) * window_seconds * 1000)  # read in the next window too
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.incr(name)
                pipe.pexpireat(name, ends_ms)
                count, _ = await pipe.execute()
        except RedisError as error:
            raise StoreUnavailable(f"redis: {error}") from error
        return int(count)

    async def failures(self, key: str, window_seconds: float, now: float) -> int:
        bucket = math.floor(now / window_seconds)
        try:
            found = await self.client.get(self.keys.failures(key, bucket))
        except RedisError as error:
            raise StoreUnavailable(f"redis: {error}") from error
        return int(found) if found is not None else 0

    async def close(self) -> None:
        """Nothing of its own: the client is the store's, closed with it."""
