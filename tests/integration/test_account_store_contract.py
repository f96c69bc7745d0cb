"""The AccountStore contract: the SQLite store (on the state store's own connection, as the
server runs it) and Redis (the tests' redis-server) keep accounts, sessions and failed
sign-in counts the same way, and a second connection (`pyloto users` beside a server, or
another instance) sees what the first wrote."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from pyloto_corp.adapters.redis import RedisKeys, RedisStore
from pyloto_corp.adapters.redis import connect as redis_connect
from pyloto_corp.adapters.redis.accounts import RedisAccounts
from pyloto_corp.adapters.sqlite import SQLiteStore
from pyloto_corp.adapters.sqlite.accounts import SQLiteAccounts
from pyloto_corp.application.accounts import (
    AGENT,
    OPERATOR,
    Account,
    AccountError,
    AccountStore,
    Session,
    hash_password,
    verify_password,
)
from pyloto_corp.application.signin import Accounts, SignInRefused
from tests.integration.conftest import RETENTION_SECONDS, all_states, terminal_states
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.anyio

HASH = "scrypt$16384$8$1$c2FsdA$a2V5"  # a stored shape; the contract never checks it


@dataclass
class Opened:
    """An account store on a state store, and a way to open a second connection to both."""

    accounts: AccountStore
    beside: Callable[[], tuple[AccountStore, Callable[[], object]]]
    closers: list[Callable[[], object]]


async def _sqlite(request: pytest.FixtureRequest) -> Opened:
    path = request.getfixturevalue("tmp_path") / "accounts.db"
    store = SQLiteStore(path, terminal_states(), exclusive=True)

    def beside() -> tuple[AccountStore, Callable[[], object]]:
        other = SQLiteAccounts.at(path)  # no lock: the server's is for records
        return other, other.close

    return Opened(SQLiteAccounts(store.db), beside, [store.close])


async def _redis(request: pytest.FixtureRequest) -> Opened:
    server: RedisServer = request.getfixturevalue("redis_server")
    prefix = request.getfixturevalue("redis_prefix")
    store = RedisStore(
        redis_connect(server.url),
        terminal_states(),
        RETENTION_SECONDS,
        RedisKeys(prefix),
        states=all_states(),
    )

    def beside() -> tuple[AccountStore, Callable[[], object]]:
        client = redis_connect(server.url)
        return RedisAccounts(client, prefix), client.aclose

    return Opened(RedisAccounts(store.client, prefix), beside, [store.close])


@pytest.fixture(params=[_sqlite, _redis], ids=["sqlite", "redis"])
async def opened(request: pytest.FixtureRequest) -> AsyncIterator[Opened]:
    made = await request.param(request)
    yield made
    for close in made.closers:
        await close()  # type: ignore[misc]


def _account(name: str, role: str = OPERATOR) -> Account:
    return Account(name, role, HASH, 1_765_000_000.5)


def _session(key: str, name: str, ends: float) -> Session:
    return Session(key, name, OPERATOR, f"csrf-{key}", ends)


async def test_an_account_is_added_once_read_listed_and_removed(opened: Opened) -> None:
    store = opened.accounts
    assert await store.add_account(_account("bia", AGENT))
    assert await store.add_account(_account("ana"))
    assert not await store.add_account(_account("ana", AGENT))  # taken: left as it was
    assert await store.get_account("ana") == _account("ana")
    assert await store.get_account("nobody") is None
    assert [a.name for a in await store.list_accounts()] == ["ana", "bia"]
    assert await store.remove_account("ana")
    assert not await store.remove_account("ana")
    assert await store.get_account("ana") is None
    assert [a.name for a in await store.list_accounts()] == ["bia"]


async def test_a_session_lives_until_its_end_and_no_longer(opened: Opened) -> None:
    store = opened.accounts
    now = time.time()
    session = _session("k1", "ana", now + 60)
    await store.add_session(session, now)
    assert await store.get_session("k1", now) == session
    assert await store.get_session("k1", now + 61) is None  # ended
    assert await store.get_session("k2", now) is None  # never was
    await store.delete_session("k1")
    assert await store.get_session("k1", now) is None
    await store.delete_session("k1")  # gone already: nothing


async def test_revoking_ends_every_session_of_one_account_only(opened: Opened) -> None:
    store = opened.accounts
    now = time.time()
    await store.add_account(_account("ana"))
    for key in ("a1", "a2"):
        await store.add_session(_session(key, "ana", now + 60), now)
    await store.add_session(_session("b1", "bia", now + 60), now)
    assert await store.revoke_sessions("ana") == 2
    assert await store.get_session("a1", now) is None
    assert await store.get_session("a2", now) is None
    assert await store.get_session("b1", now) is not None
    assert await store.revoke_sessions("ana") == 0
    assert await store.get_account("ana") is not None  # revoking keeps the account


async def test_removing_an_account_ends_its_sessions(opened: Opened) -> None:
    store = opened.accounts
    now = time.time()
    await store.add_account(_account("ana"))
    await store.add_session(_session("a1", "ana", now + 60), now)
    assert await store.remove_account("ana")
    assert await store.get_session("a1", now) is None


async def test_failures_are_counted_per_key_and_window(opened: Opened) -> None:
    store = opened.accounts
    now = float(int(time.time() // 60) * 60 + 1)  # early in a one-minute window
    assert await store.failures("k", 60, now) == 0
    assert [await store.count_failure("k", 60, now) for _ in range(3)] == [1, 2, 3]
    assert await store.failures("k", 60, now + 30) == 3
    assert await store.failures("other", 60, now) == 0
    assert await store.failures("k", 60, now + 60) == 0  # the next window starts afresh
    assert await store.count_failure("k", 60, now + 60) == 1
    assert await store.failures("k", 60, now) == 3  # the window before it is still read


async def test_a_second_connection_sees_the_same_accounts_and_sessions(opened: Opened) -> None:
    """What `pyloto users` writes beside a server, the server reads, and the other way."""
    other, close = opened.beside()
    try:
        now = time.time()
        assert await other.add_account(_account("ana"))
        assert await opened.accounts.get_account("ana") == _account("ana")
        await opened.accounts.add_session(_session("s1", "ana", now + 60), now)
        assert await other.revoke_sessions("ana") == 1
        assert await opened.accounts.get_session("s1", now) is None
        await other.count_failure("k", 300, now)
        assert await opened.accounts.failures("k", 300, now) == 1
    finally:
        await close()  # type: ignore[misc]


async def test_sign_in_opens_a_new_session_each_time_and_sign_out_ends_it(
    opened: Opened,
) -> None:
    """Two sign-ins in the same second get two sessions (ids, keys and CSRF tokens), each
    ended on its own; the store never holds the cookie's id."""
    frozen = time.time()
    accounts = Accounts(opened.accounts, clock=lambda: frozen)
    await accounts.add("Ana", AGENT, "a long password")
    first = await accounts.sign_in("ana", "a long password", "198.51.100.7")
    second = await accounts.sign_in("ANA", "a long password", "198.51.100.7")
    assert first.session_id != second.session_id
    assert first.session.key != second.session.key
    assert first.session.csrf != second.session.csrf
    assert first.session_id not in (first.session.key, first.session.csrf)
    assert await accounts.session(first.session_id) == first.session
    assert await opened.accounts.get_session(first.session_id, frozen) is None
    await accounts.sign_out(first.session)
    assert await accounts.session(first.session_id) is None
    assert await accounts.session(second.session_id) == second.session
    assert await accounts.session("forged") is None
    assert await accounts.session("") is None


async def test_a_session_ends_after_its_lifetime(opened: Opened) -> None:
    now = [time.time()]
    accounts = Accounts(opened.accounts, session_seconds=60, clock=lambda: now[0])
    await accounts.add("ana", OPERATOR, "a long password")
    signed = await accounts.sign_in("ana", "a long password", "client")
    now[0] += 59
    assert await accounts.session(signed.session_id) is not None
    now[0] += 2
    assert await accounts.session(signed.session_id) is None


async def test_a_limit_holds_across_the_edge_of_a_window(opened: Opened) -> None:
    """Failures late in one window still count early in the next; two windows on, gone."""
    now = [float(int(time.time() // 300) * 300 + 299)]  # the last second of a window
    accounts = Accounts(opened.accounts, clock=lambda: now[0])
    await accounts.add("ana", OPERATOR, "a long password")
    for _ in range(5):
        with pytest.raises(SignInRefused):
            await accounts.sign_in("ana", "wrong password", "client")
    now[0] += 2  # the next window
    with pytest.raises(SignInRefused) as refused:
        await accounts.sign_in("ana", "a long password", "client")
    assert refused.value.reason == "rate_limited_account"
    now[0] += 300  # the window after that: the failures are out of reach
    assert (await accounts.sign_in("ana", "a long password", "client")).session.name == "ana"


async def test_wrong_credentials_are_refused_alike_and_counted(opened: Opened) -> None:
    accounts = Accounts(opened.accounts)
    await accounts.add("ana", OPERATOR, "a long password")
    for name, password, detail in (
        ("ana", "wrong password", "wrong_password"),
        ("nobody", "a long password", "unknown_account"),
        ("not a name!", "a long password", "unknown_account"),
    ):
        with pytest.raises(SignInRefused) as refused:
            await accounts.sign_in(name, password, "client")
        assert refused.value.reason == "bad_credentials"
        assert refused.value.detail == detail
    with pytest.raises(AccountError):
        await accounts.add("ana", AGENT, "another password")


def test_a_password_hash_carries_its_parameters_and_a_random_salt() -> None:
    stored = hash_password("a long password")
    again = hash_password("a long password")
    assert stored != again  # salted
    kind, n, r, p, _, _ = stored.split("$")
    assert (kind, n, r, p) == ("scrypt", "16384", "8", "1")
    assert verify_password("a long password", stored)
    assert not verify_password("a long passwore", stored)
    assert "a long password" not in stored
