"""The store's pipelined script connection (adapters/redis/wire.py) against a real
redis-server, on asyncio and on uvloop: many calls at once, error replies, a flushed script
cache, Redis killed and restarted, a command deadline passing, AUTH and SELECT."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import redis
import uvloop
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pyloto_corp.adapters.redis import RedisKeys, RedisStore, RedisWire, Script, connect
from pyloto_corp.application.ports import StoreUnavailable
from tests.integration.conftest import terminal_states
from tests.support.redis_server import RedisServer

LOOPS = ["asyncio", "uvloop"]

ECHO = Script("return {KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1}")
FAIL_IF = Script(
    "if ARGV[1] == 'fail' then return redis.error_reply('ERR asked to fail') end\nreturn ARGV[1]"
)
# Keeps Redis busy for ARGV[1] milliseconds (a slow script: Redis answers nobody meanwhile).
BUSY = Script(
    """
local t = redis.call('TIME')
local until_us = t[1] * 1000000 + t[2] + tonumber(ARGV[1]) * 1000
while true do
  t = redis.call('TIME')
  if t[1] * 1000000 + t[2] >= until_us then break end
end
return 1
"""
)


def run_on(loop_name: str, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run `work()` on a fresh event loop of that kind."""
    factory = uvloop.new_event_loop if loop_name == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(work())


def wire_for(url: str, timeout: float = 2.0) -> RedisWire:
    """A wire configured from the same URL and timeout as the store's redis-py client."""
    wire = RedisWire.for_client(connect(url, timeout))
    assert wire is not None
    return wire


async def client_id(wire: RedisWire) -> int:
    """The server's id of the wire's current connection."""
    return int(await wire.execute("CLIENT", "ID"))


@pytest.mark.parametrize("loop_name", LOOPS)
def test_five_hundred_calls_at_once_each_get_their_own_reply(
    loop_name: str, redis_server: RedisServer
) -> None:
    """500 calls made at once (some with large arguments) share one connection and each
    gets the reply to its own command."""

    async def work() -> None:
        wire = wire_for(redis_server.url)
        try:
            first = await client_id(wire)
            values = [f"v{n}-" + "é" * (n % 7) * (4000 if n % 50 == 0 else 1) for n in range(500)]
            replies = await asyncio.gather(
                *(wire.evalsha(ECHO, [f"k{n}"], [value, n]) for n, value in enumerate(values))
            )
            assert replies == [
                [f"k{n}".encode(), value.encode(), n + 1] for n, value in enumerate(values)
            ]
            assert await client_id(wire) == first  # one connection throughout
        finally:
            await wire.aclose()

    run_on(loop_name, work)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_lua_error_fails_only_its_call(loop_name: str, redis_server: RedisServer) -> None:
    """An error reply raises ResponseError in its own call; the calls around it get their
    replies and the connection stays open."""

    async def work() -> None:
        wire = wire_for(redis_server.url)
        try:
            first = await client_id(wire)
            names = ["a", "b", "fail", "c", "d"] * 20
            results = await asyncio.gather(
                *(wire.evalsha(FAIL_IF, [], [name]) for name in names), return_exceptions=True
            )
            for name, result in zip(names, results, strict=True):
                if name == "fail":
                    assert isinstance(result, ResponseError)
                    assert "asked to fail" in str(result)
                else:
                    assert result == name.encode()
            assert await client_id(wire) == first
        finally:
            await wire.aclose()

    run_on(loop_name, work)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_flushed_script_cache_is_recovered(loop_name: str, redis_server: RedisServer) -> None:
    """After SCRIPT FLUSH, calls (several at once) still succeed: the script is run and
    loaded again, and later calls are EVALSHA again."""

    async def work() -> None:
        wire = wire_for(redis_server.url)
        check = redis_server.client()
        try:
            assert await wire.evalsha(ECHO, ["k"], ["x", 1]) == [b"k", b"x", 2]
            check.script_flush()
            assert check.script_exists(ECHO.sha.decode()) == [False]
            replies = await asyncio.gather(
                *(wire.evalsha(ECHO, ["k"], ["y", n]) for n in range(20))
            )
            assert replies == [[b"k", b"y", n + 1] for n in range(20)]
            assert check.script_exists(ECHO.sha.decode()) == [True]
        finally:
            check.close()
            await wire.aclose()

    run_on(loop_name, work)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_redis_killed_fails_pending_calls_at_once_then_calls_succeed_after_restart(
    loop_name: str, private_redis: RedisServer
) -> None:
    """Calls queued behind a slow script when Redis is SIGKILLed fail with ConnectionError
    (no waiting for the deadline, no retry: they may have run); while Redis is down calls
    fail at once; once it is back the same wire answers again."""

    async def work() -> None:
        wire = wire_for(private_redis.url, timeout=10.0)
        try:
            assert await wire.evalsha(ECHO, ["k"], ["x", 1]) == [b"k", b"x", 2]
            await wire.execute("SCRIPT", "LOAD", BUSY.body)  # so it runs ahead of the others
            busy = asyncio.ensure_future(wire.evalsha(BUSY, [], [3000]))
            queued = [asyncio.ensure_future(wire.evalsha(ECHO, ["k"], ["q", n])) for n in range(50)]
            await asyncio.sleep(0.3)  # all written, Redis in the slow script
            killed_at = time.monotonic()
            await asyncio.to_thread(private_redis.stop, True)
            results = await asyncio.gather(busy, *queued, return_exceptions=True)
            assert time.monotonic() - killed_at < 2.0
            assert all(isinstance(r, RedisConnectionError) for r in results), results
            started = time.monotonic()
            with pytest.raises(RedisConnectionError):
                await wire.evalsha(ECHO, ["k"], ["down", 1])
            assert time.monotonic() - started < 1.0
            await asyncio.to_thread(private_redis.start)
            replies = await asyncio.gather(
                *(wire.evalsha(ECHO, ["k"], ["up", n]) for n in range(20))
            )
            assert replies == [[b"k", b"up", n + 1] for n in range(20)]
        finally:
            await wire.aclose()

    run_on(loop_name, work)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_command_past_its_deadline_fails_pending_calls_and_the_wire_recovers(
    loop_name: str, private_redis: RedisServer
) -> None:
    """While another client keeps Redis in a slow script, calls fail with TimeoutError once
    the per-command deadline passes, and the connection is dropped; after the script ends
    the next calls open a new one and get their own replies (not the late ones)."""

    async def work() -> None:
        wire = wire_for(private_redis.url, timeout=0.3)
        other = private_redis.client()
        try:
            first = await client_id(wire)
            other.script_load(BUSY.body.decode())
            slow = threading.Thread(target=other.evalsha, args=(BUSY.sha.decode(), 0, 1500))
            slow.start()
            await asyncio.sleep(0.2)
            started = time.monotonic()
            results = await asyncio.gather(
                *(wire.evalsha(ECHO, ["k"], ["late", n]) for n in range(30)),
                return_exceptions=True,
            )
            waited = time.monotonic() - started
            assert all(isinstance(r, RedisTimeoutError) for r in results), results
            assert 0.25 <= waited < 1.0
            await asyncio.to_thread(slow.join)
            replies = await asyncio.gather(
                *(wire.evalsha(ECHO, ["k"], ["new", n]) for n in range(30))
            )
            assert replies == [[b"k", b"new", n + 1] for n in range(30)]
            assert await client_id(wire) != first
        finally:
            other.close()
            await wire.aclose()

    run_on(loop_name, work)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_auth_and_select_from_the_url(loop_name: str, private_redis: RedisServer) -> None:
    """On a redis-server with requirepass and an ACL user, the wire authenticates with the
    URL's password (and user) and works in the URL's database; a wrong password fails with
    AuthenticationError."""
    admin = private_redis.client()
    admin.acl_setuser(
        "pyloto", enabled=True, passwords=["+user-secret"], keys="*", commands=["+@all"]
    )
    admin.config_set("requirepass", "default-secret")
    admin.close()
    base = f"127.0.0.1:{private_redis.port}"

    async def work() -> None:
        for url, db in [
            (f"redis://:default-secret@{base}/3", 3),
            (f"redis://pyloto:user-secret@{base}/5", 5),
        ]:
            wire = wire_for(url)
            try:
                key = f"wire-{loop_name}-{db}"
                assert await wire.execute("SET", key, db) == b"OK"
                assert await wire.evalsha(ECHO, [key], ["x", 1]) == [key.encode(), b"x", 2]
            finally:
                await wire.aclose()
            check = redis.Redis(port=private_redis.port, password="default-secret", db=db)
            try:
                assert check.get(key) == str(db).encode()
            finally:
                check.close()
        wrong = wire_for(f"redis://:not-it@{base}/0")
        try:
            with pytest.raises(AuthenticationError):
                await wrong.evalsha(ECHO, ["k"], ["x", 1])
        finally:
            await wrong.aclose()

    run_on(loop_name, work)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_store_calls_in_flight_when_redis_dies_raise_store_unavailable_at_once(
    loop_name: str, private_redis: RedisServer, redis_prefix: str
) -> None:
    """Step leases waiting behind another client's slow script when Redis is SIGKILLed raise
    StoreUnavailable (caused by a Redis error) well before the store's timeout; after the
    restart the same store takes leases again."""

    async def work() -> None:
        store = RedisStore(
            connect(private_redis.url, 10.0), terminal_states(), 3600.0, RedisKeys(redis_prefix)
        )
        other = private_redis.client()
        try:
            assert (await store.lease_step("warm", "me", 5, "m-warm")).taken
            other.script_load(BUSY.body.decode())

            def slow() -> None:
                with contextlib.suppress(redis.RedisError):
                    other.evalsha(BUSY.sha.decode(), 0, 3000)

            busy = threading.Thread(target=slow)
            busy.start()
            await asyncio.sleep(0.2)
            calls = [
                asyncio.ensure_future(store.lease_step(f"l{n}", "me", 5, f"m{n}"))
                for n in range(50)
            ]
            await asyncio.sleep(0.2)
            killed_at = time.monotonic()
            await asyncio.to_thread(private_redis.stop, True)
            results = await asyncio.gather(*calls, return_exceptions=True)
            assert time.monotonic() - killed_at < 2.0
            assert all(isinstance(r, StoreUnavailable) for r in results), results
            assert all(isinstance(r.__cause__, redis.RedisError) for r in results)
            await asyncio.to_thread(busy.join)
            await asyncio.to_thread(private_redis.start)
            loads = await asyncio.gather(
                *(store.lease_step(f"after{n}", "me", 5, f"m{n}") for n in range(20))
            )
            assert all(load.taken and load.record is None for load in loads)
        finally:
            other.close()
            await store.close()

    run_on(loop_name, work)
