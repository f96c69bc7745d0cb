"""The store's Lua scripts on a real redis-server: each compiles, each is run again after the
server forgets them (SCRIPT FLUSH, as after a restart), on the wire and on redis-py, and
save and finish get their arguments where their layouts name them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from pyloto_corp.adapters.redis import RedisStore, Script
from pyloto_corp.adapters.redis.scripts import BODIES, FINISH, SAVE
from pyloto_corp.application.ports import (
    CustomerRequest,
    LeaseHold,
    SlotRequest,
    StepCommit,
    TurnsWrite,
    Writes,
)
from pyloto_corp.domain.records import Turn
from tests.integration.factories import record
from tests.integration.test_redis_store import every_store_call, open_store
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.anyio

SHAS = {name: Script(body).sha.decode() for name, body in BODIES.items()}


async def loaded(client: aioredis.Redis) -> dict[str, bool]:
    """Whether Redis holds each of the store's scripts now."""
    found = await client.script_exists(*SHAS.values())
    return dict(zip(SHAS, (bool(flag) for flag in found), strict=True))


async def test_every_script_compiles_and_is_named_by_its_sha(private_redis: RedisServer) -> None:
    client = aioredis.Redis.from_url(private_redis.url)
    try:
        for name, body in BODIES.items():
            assert await client.script_load(body) == SHAS[name], name
    finally:
        await client.aclose()


@pytest.mark.parametrize("wired", [True, False], ids=["wire", "redis-py"])
async def test_every_store_operation_works_after_script_flush(
    private_redis: RedisServer, redis_prefix: str, wired: bool
) -> None:
    """Every operation once (every script loaded), SCRIPT FLUSH, then every operation again:
    each one answers as it should (NOSCRIPT is answered by the script's body), and Redis
    holds every script again. Without the wire (a client on a Unix socket has none) the hot
    path's scripts take redis-py's way (SCRIPT LOAD, then EVALSHA again)."""
    store = open_store(private_redis.url, redis_prefix)
    if not wired:
        store._wire = None
    check = aioredis.Redis.from_url(private_redis.url)
    try:
        known = record()
        assert await store.create_if_absent([known]) == [True]
        for call in every_store_call(store, known.message_id).values():
            await call()
        assert all((await loaded(check)).values())

        await check.script_flush()
        assert not any((await loaded(check)).values())

        fresh = record()
        assert await store.create_if_absent([fresh]) == [True]
        assert await store.get(fresh.message_id) == fresh
        lease = await store.lease_step("s:received", "me", 5, fresh.message_id, turns=5)
        assert lease.taken
        assert lease.record == fresh
        done = await store.finish_step(
            StepCommit(
                record(fresh.message_id, state="deduped", updated_at=1_001.0),
                fresh.version,
                LeaseHold("s:received", "me"),
                next_lease=LeaseHold("s:deduped", "me", 5),
                writes=Writes(
                    slot=SlotRequest("pace", 1.0, 6.0, 5),
                    turns=TurnsWrite("conv", [Turn("business", "oi", 1.0)], 60, 5),
                    customer=CustomerRequest("p" * 32, "u" * 32),
                ),
            )
        )
        # The first round moved customer u to v: u's alias is followed.
        assert (done.saved, done.next_taken, done.customer) == (True, True, "v" * 32)
        assert await store.recent_turns("conv", 0.0, 5) == [Turn("business", "oi", 1.0)]
        await check.script_flush()
        for call in every_store_call(store, known.message_id).values():
            await call()  # none raises
        assert await loaded(check) == dict.fromkeys(SHAS, True)
    finally:
        await check.aclose()
        await store.close()


Captured = list[tuple[list[str], list[Any]]]


def capture(store: RedisStore, attribute: str) -> Captured:
    """The keys and arguments of each call the store makes through `attribute` (a script or
    _hot), which still runs."""
    seen: Captured = []
    inner: Callable[..., Awaitable[Any]] = getattr(store, attribute)

    if attribute == "_hot":

        async def hot(script: Any, wired: Any, keys: list[str], args: list[Any]) -> Any:
            seen.append((list(keys), list(args)))
            return await inner(script, wired, keys, args)

        setattr(store, attribute, hot)
    else:

        async def call(*, keys: list[str], args: list[Any]) -> Any:
            seen.append((list(keys), list(args)))
            return await inner(keys=keys, args=args)

        setattr(store, attribute, call)
    return seen


async def test_save_and_finish_fill_the_positions_their_layouts_name(
    private_redis: RedisServer, redis_prefix: str
) -> None:
    store = open_store(private_redis.url, redis_prefix)
    try:
        stored = record()
        await store.create_if_absent([stored])
        saves = capture(store, "_save")
        moved = record(stored.message_id, state="deduped", updated_at=1_002.0)
        assert await store.save(moved, expected_version=0)
        [(keys, args)] = saves
        named = dict(zip(SAVE.argv, args, strict=True))
        assert dict(zip(SAVE.keys, keys, strict=True))["fallback_reasons"] == (
            store.keys.fallback_reasons
        )
        assert (named["expected_version"], named["state"], named["updated_at"]) == (
            0,
            "deduped",
            1_002.0,
        )
        assert named["state_prefix"] == store.keys.state_index("")

        finishes = capture(store, "_hot")
        turns = [Turn("business", "um", 1.0), Turn("business", "dois", 2.0)]
        await store.finish_step(
            StepCommit(
                record(stored.message_id, state="llm1", updated_at=1_003.0),
                moved.version,
                LeaseHold("lease-now", "owner-now"),
                next_lease=LeaseHold("lease-next", "owner-next", 2),
                writes=Writes(
                    slot=SlotRequest("pace-key", 7.0, 6.0, 5),
                    turns=TurnsWrite("conv-key", turns, 60, 9),
                    customer=CustomerRequest("p" * 32, "u" * 32),
                ),
            )
        )
        [(keys, args)] = finishes
        assert len(keys) == len(FINISH.keys)
        assert len(args) == len(FINISH.argv) + len(turns)
        by_key = dict(zip(FINISH.keys, keys, strict=True))
        by_arg = dict(zip(FINISH.argv, args, strict=False))
        assert by_key["lease"] == store.keys.lease("lease-now")
        assert by_key["next_lease"] == store.keys.lease("lease-next")
        assert by_key["bucket"] == store.keys.pacing("pace-key")
        assert by_key["turns_list"] == store.keys.conversation("conv-key")
        assert by_key["updated_index"] == store.keys.updated_index
        assert (by_arg["owner"], by_arg["next_owner"], by_arg["next_lease_ms"]) == (
            "owner-now",
            "owner-next",
            2000,
        )
        assert (by_arg["bucket_now"], by_arg["burst"], by_arg["turns_kept"]) == ("7.0", 5, 9)
        assert by_arg["state"] == "llm1"
        assert (by_arg["phone_key"], by_arg["user_key"], by_arg["resolve"]) == (
            "p" * 32,
            "u" * 32,
            "1",
        )
        assert by_arg["alias_prefix"] == store.keys.alias("")
        assert len(args[len(FINISH.argv) :]) == len(turns)
    finally:
        await store.close()
