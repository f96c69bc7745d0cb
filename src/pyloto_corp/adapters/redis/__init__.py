"""The Redis store: shared state and atomic dedupe for many instances.

store.py     RedisStore (the StateStore port) and connect(), the pooled redis-py client
keys.py      every key pyloto writes and how long each lives
wire.py      the pipelined EVALSHA connection of the hot path's scripts
scripts.py   the loader of scripts/*.lua (one file per script) and scripts/include/*.lua
"""

from pyloto_corp.adapters.redis.keys import (
    COUNTER_TTL_SECONDS,
    DEDUPE_WINDOW_SECONDS,
    DRY_RUN_LOG_LENGTH,
    LEASE_SECONDS,
    RECORD_TTL_GRACE_SECONDS,
    RedisKeys,
)
from pyloto_corp.adapters.redis.store import ADOPT_SLICE, RedisStore, connect
from pyloto_corp.adapters.redis.wire import RedisWire, Script

__all__ = [
    "ADOPT_SLICE",
    "COUNTER_TTL_SECONDS",
    "DEDUPE_WINDOW_SECONDS",
    "DRY_RUN_LOG_LENGTH",
    "LEASE_SECONDS",
    "RECORD_TTL_GRACE_SECONDS",
    "RedisKeys",
    "RedisStore",
    "RedisWire",
    "Script",
    "connect",
]
