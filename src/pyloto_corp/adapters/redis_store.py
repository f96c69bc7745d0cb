"""Redis store: shared state and atomic dedupe for many instances (redis.asyncio, hiredis).

Each operation is one round trip: a Lua script where several keys must change together
(create-if-absent of a whole batch, version-checked saves, monotonic statuses), so no
check-then-set race exists between instances. The scripts of a step's hot path (create, the
step's lease and load, its save and end, delivery statuses) go over one pipelined connection
(redis_wire), which costs a fraction of redis-py's CPU per call; everything else uses the
redis-py client.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection, Sequence
from typing import Any, cast

import msgspec
import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from pyloto_corp.adapters.ops_buckets import first_read
from pyloto_corp.adapters.redis_keys import COUNTER_TTL_SECONDS, RECORD_TTL_GRACE_SECONDS, RedisKeys
from pyloto_corp.adapters.redis_wire import RedisWire, Script
from pyloto_corp.application.durability import Persistence
from pyloto_corp.application.ports import (
    Adoption,
    RecordPage,
    RecordQuery,
    SlotRequest,
    StepCommit,
    StepLoad,
    StepSave,
    StoreNotDurable,
    StoreUnavailable,
)
from pyloto_corp.domain.ops_metrics import (
    HOUR,
    MINUTE,
    bucket_of,
    created_counters,
    transition_counters,
)
from pyloto_corp.domain.records import DELIVERY_RANK, FAILED_STATE, Record, StatusUpdate, Turn
from pyloto_corp.domain.replies import reply_key

# The operations console's read model, kept by the scripts that write records (see
# RedisKeys): index() moves a record between the indexes of its state and fallback reason
# and rescores it in the index of all records; count() adds counters (names separated by
# spaces, which names never hold) to one bucket's hash and renews its expiry.
_OPS_FN = f"""
local MINUTE_TTL, HOUR_TTL = {COUNTER_TTL_SECONDS[MINUTE]}, {COUNTER_TTL_SECONDS[HOUR]}
local function index(updated, reasons, states, fallbacks, id, at, old_state, state, old_reason,
    reason)
  redis.call('ZADD', updated, at, id)
  if old_state and old_state ~= state then redis.call('ZREM', states .. old_state, id) end
  redis.call('ZADD', states .. state, at, id)
  if old_reason and old_reason ~= '' and old_reason ~= reason then
    redis.call('ZREM', fallbacks .. old_reason, id)
  end
  if reason ~= '' then
    redis.call('ZADD', fallbacks .. reason, at, id)
    if old_reason ~= reason then redis.call('SADD', reasons, reason) end
  end
end
local function count(key, names, n, ttl)
  for name in string.gmatch(names, '[^ ]+') do redis.call('HINCRBY', key, name, n) end
  redis.call('EXPIRE', key, ttl)
end
"""

# Every record hash names, in field 'q', the instance that wrote it last: with the local
# queue that instance holds the record's next task, so if it dies the record is an orphan
# (see _ADOPT).
# KEYS: record keys..., open index, created index, failed index, updated index, fallback
# reasons. ARGV: ttl, failed state, owner, state index prefix, fallback index prefix,
# counter names of a creation, '1' to require AOF (else ''), then per record: id, version,
# state, created_at, updated_at, data, conversation, fallback reason ('' for none), its
# minute and hour counter keys. The counters of the records created are added once per
# bucket. When AOF is required and off, nothing is written and the reply is a NOTDURABLE
# error: the check and the write are one atomic step, so a Redis whose AOF was switched off
# (CONFIG SET appendonly no) or that restarted without it acknowledges nothing from then on.
_CREATE = (
    _OPS_FN
    + """
if ARGV[7] == '1' and not string.find(redis.call('INFO', 'persistence'), 'aof_enabled:1', 1,
    true) then
  return redis.error_reply('NOTDURABLE the Redis has no append-only file')
end
local ttl = tonumber(ARGV[1])
local n = #KEYS - 5
local open, created, failed = KEYS[n + 1], KEYS[n + 2], KEYS[n + 3]
local result, minutes, hours = {}, {}, {}
for i = 1, n do
  local a = 7 + (i - 1) * 10
  if redis.call('EXISTS', KEYS[i]) == 1 then
    result[i] = 0
  else
    local id, state, at, reason = ARGV[a + 1], ARGV[a + 3], ARGV[a + 5], ARGV[a + 8]
    redis.call('HSET', KEYS[i], 'v', ARGV[a + 2], 's', state, 'o', '', 'd', ARGV[a + 6],
      'q', ARGV[3], 'c', ARGV[a + 7], 'f', reason)
    redis.call('EXPIRE', KEYS[i], ttl)
    redis.call('ZADD', open, at, id)
    redis.call('ZADD', created, ARGV[a + 4], id)
    if state == ARGV[2] then redis.call('ZADD', failed, at, id) end
    index(KEYS[n + 4], KEYS[n + 5], ARGV[4], ARGV[5], id, at, false, state, false, reason)
    minutes[ARGV[a + 9]] = (minutes[ARGV[a + 9]] or 0) + 1
    hours[ARGV[a + 10]] = (hours[ARGV[a + 10]] or 0) + 1
    result[i] = 1
  end
end
for key, created_here in pairs(minutes) do count(key, ARGV[6], created_here, MINUTE_TTL) end
for key, created_here in pairs(hours) do count(key, ARGV[6], created_here, HOUR_TTL) end
return result
"""
)

# Field 'c' names the record's conversation (Record.conversation), so a step's lease can
# read the conversation's turns along with the record (see _LEASE_GET).
# KEYS: record, open index, failed index, then from KEYS[k]: updated index, minute and hour
# counter keys (any key when there are no counters), fallback reasons.
# ARGV: expected version, version, state, outbound id, data, updated_at, terminal (1/0),
# message id, failed (1/0), owner, conversation, then from ARGV[a]: state index prefix,
# fallback index prefix, fallback reason ('' for none), counter names ('' for none).
# `current` is the stored {version, state, fallback reason} (read with the version check).
_SAVE_FN = (
    _OPS_FN
    + """
local function save(current, k, a)
  redis.call('HSET', KEYS[1], 'v', ARGV[2], 's', ARGV[3], 'o', ARGV[4], 'd', ARGV[5],
    'q', ARGV[10], 'c', ARGV[11], 'f', ARGV[a + 2])
  index(KEYS[k], KEYS[k + 3], ARGV[a], ARGV[a + 1], ARGV[8], ARGV[6], current[2], ARGV[3],
    current[3], ARGV[a + 2])
  if ARGV[a + 3] ~= '' then
    count(KEYS[k + 1], ARGV[a + 3], 1, MINUTE_TTL)
    count(KEYS[k + 2], ARGV[a + 3], 1, HOUR_TTL)
  end
  if ARGV[7] == '1' then
    redis.call('ZREM', KEYS[2], ARGV[8])
  else
    redis.call('ZADD', KEYS[2], ARGV[6], ARGV[8])
  end
  if ARGV[9] == '1' then
    redis.call('ZADD', KEYS[3], ARGV[6], ARGV[8])
  else
    redis.call('ZREM', KEYS[3], ARGV[8])
  end
end
"""
)
_SAVE = (
    _SAVE_FN
    + """
local current = redis.call('HMGET', KEYS[1], 'v', 's', 'f')
if current[1] ~= ARGV[1] then return 0 end
save(current, 4, 12)
return 1
"""
)

# KEYS: record, delivery ref. ARGV: delivery key prefix.
# load() returns {data, status, errors, outbound id, conversation} with the highest-ranked
# status of the record's sends, or nil when there is no record. Field 'c' is the record's
# conversation even where its JSON has none (the accept's save resolves it in the script).
_LOAD = """
local function load()
  local r = redis.call('HMGET', KEYS[1], 'd', 'o', 'c')
  if not r[1] then return nil end
  local best, status, errors, found = -1, false, false, false
  local candidates = {r[2], redis.call('GET', KEYS[2])}
  for _, outbound in ipairs(candidates) do
    if outbound and outbound ~= '' then
      local d = redis.call('HMGET', ARGV[1] .. outbound, 'rank', 'status', 'errors')
      if d[1] and tonumber(d[1]) > best then
        best, status, errors, found = tonumber(d[1]), d[2], d[3], outbound
      end
    end
  end
  return {r[1], status, errors, found, r[3]}
end
"""
_GET = _LOAD + "return load()\n"
# As _GET, after taking KEYS[3] (a lease) for ARGV[2] (owner) for ARGV[3] ms: {0} when it
# is held by another, {1} when taken but there is no record, else {1, data, status, ...,
# conversation, turns}: turns is false unless ARGV[4] > 0, else the last ARGV[4] entries of the
# conversation the record names (key: ARGV[5] .. its field 'c'), false if it names none.
# A step's lease, its record and the turns it reads in one round trip.
_LEASE_GET = (
    _LOAD
    + """
if not redis.call('SET', KEYS[3], ARGV[2], 'NX', 'PX', ARGV[3]) then return {0} end
local row = load()
if not row then return {1} end
local turns = false
local wanted = tonumber(ARGV[4])
if wanted > 0 then
  local conversation = redis.call('HGET', KEYS[1], 'c')
  if conversation and conversation ~= '' then
    turns = redis.call('LRANGE', ARGV[5] .. conversation, -wanted, -1)
  end
end
return {1, row[1], row[2], row[3], row[4], row[5], turns}
"""
)

# A token bucket at `key`: {tokens, at}; the wait in seconds (0 when taken).
_TAKE_SLOT_FN = """
local function take_slot(key, now, per, burst, ttl)
  local b = redis.call('HMGET', key, 't', 'a')
  local tokens, at = burst, now
  if b[1] then tokens, at = tonumber(b[1]), tonumber(b[2]) end
  if now > at then
    tokens = math.min(burst, tokens + (now - at) / per)
    at = now
  end
  local wait = 0
  if tokens >= 1 then
    tokens = tokens - 1
  else
    wait = (1 - tokens) * per
  end
  redis.call('HSET', key, 't', tostring(tokens), 'a', tostring(at))
  redis.call('PEXPIRE', key, ttl)
  return wait
end
"""
# KEYS: bucket. ARGV: now, seconds per token, burst, ttl (ms).
# Returns the wait in seconds as a string (0 when taken).
_TAKE_SLOT = (
    _TAKE_SLOT_FN
    + """
return tostring(take_slot(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
  ARGV[4]))
"""
)

# Customer keys (see CustomerKeys). follow() is the customer key `key` stands for through its
# aliases (`aliases` .. key), at most ALIAS_HOPS of them; move_turns() renames the turns of
# one key to another unless that one has its own (RENAME keeps the list's expiry); resolve()
# is `resolve_customer` ('' for a key not given). Keys are computed from prefixes, as the
# store expects a single-shard Redis (see redis_keys).
ALIAS_HOPS = 4
_CUSTOMER_FN = f"""
local function follow(aliases, key)
  for _ = 1, {ALIAS_HOPS} do
    local next = redis.call('GET', aliases .. key)
    if not next or next == key then return key end
    key = next
  end
  return key
end
local function move_turns(conversations, source, target)
  local from, to = conversations .. source, conversations .. target
  if redis.call('EXISTS', from) == 1 and redis.call('EXISTS', to) == 0 then
    redis.call('RENAME', from, to)
  end
end
local function resolve(conversations, aliases, ttl, phone, user)
  if user == '' then
    if phone == '' then return '' end
    return follow(aliases, phone)
  end
  local customer = follow(aliases, user)
  if phone ~= '' and phone ~= customer then
    move_turns(conversations, phone, customer)
    redis.call('SET', aliases .. phone, customer, 'EX', ttl)
  end
  return customer
end
"""
# ARGV: conversation prefix, alias prefix, alias ttl (s), number's key ('' for none), BSUID's
# key ('' for none). Returns the customer key ('' when neither is given).
_RESOLVE = _CUSTOMER_FN + "return resolve(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])\n"
# ARGV: conversation prefix, alias prefix, alias ttl (s), previous key, current key.
_MOVE = (
    _CUSTOMER_FN
    + """
local previous, current = ARGV[4], ARGV[5]
if previous == current then return 0 end
if follow(ARGV[2], current) == previous then redis.call('DEL', ARGV[2] .. current) end
move_turns(ARGV[1], previous, current)
redis.call('SET', ARGV[2] .. previous, current, 'EX', ARGV[3])
return 1
"""
)

# A step's end in one round trip: its save (as _SAVE), under a pacing token when its claim
# needs one, the turns its send adds, the release of its lease and the next step's lease.
# KEYS: record, open index, failed index, lease, next lease, bucket, conversation (the last
# three: any key when unused), then as _SAVE's from KEYS[k] (8-11). ARGV: as _SAVE (1-11),
# then owner (12), next owner (13, '' for none), next lease ms (14), bucket now (15, '' for
# none), seconds per token (16), burst (17), bucket ttl ms (18), turns window s (19), turns
# kept (20), as _SAVE's from ARGV[a] (21-24), customer: number's key (25, '' for none),
# BSUID's key (26, '' for none), resolve (27: '1' to resolve them, saved in field 'c' in
# place of ARGV[11], else ''), conversation prefix (28), alias prefix (29), alias ttl s (30),
# turns (31...).
# Returns {saved, next lease taken, wait as a string, customer key resolved or ''}. The
# version is checked before the token is taken, so a stale claim costs none; the lease is
# released before the next is taken, as both may have the same name (a claim made anew in
# `sending`).
_FINISH = (
    _SAVE_FN
    + _TAKE_SLOT_FN
    + _CUSTOMER_FN
    + """
local saved, taken, wait, customer = 0, 0, 0, ''
local TURNS = 31
local current = redis.call('HMGET', KEYS[1], 'v', 's', 'f')
if current[1] == ARGV[1] then
  if ARGV[15] ~= '' then
    wait = take_slot(KEYS[6], tonumber(ARGV[15]), tonumber(ARGV[16]), tonumber(ARGV[17]),
      ARGV[18])
  end
  if wait == 0 then
    if ARGV[27] == '1' then
      customer = resolve(ARGV[28], ARGV[29], ARGV[30], ARGV[25], ARGV[26])
      ARGV[11] = customer
    end
    save(current, 8, 21)
    saved = 1
  end
end
if #ARGV >= TURNS then
  redis.call('RPUSH', KEYS[7], unpack(ARGV, TURNS))
  redis.call('LTRIM', KEYS[7], -tonumber(ARGV[20]), -1)
  redis.call('EXPIRE', KEYS[7], ARGV[19])
end
if redis.call('GET', KEYS[4]) == ARGV[12] then redis.call('DEL', KEYS[4]) end
if saved == 1 and ARGV[13] ~= '' then
  if redis.call('SET', KEYS[5], ARGV[13], 'NX', 'PX', ARGV[14]) then taken = 1 end
end
return {saved, taken, tostring(wait), customer}
"""
)

# KEYS: delivery, delivery ref (or the delivery key again when there is no callback data).
# ARGV: status, rank, at, errors, message id ('' if none), ttl, outbound id.
_STATUS = """
local current = tonumber(redis.call('HGET', KEYS[1], 'rank') or '0')
if tonumber(ARGV[2]) <= current then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'rank', ARGV[2], 'at', ARGV[3], 'errors', ARGV[4])
if ARGV[5] ~= '' then
  redis.call('HSETNX', KEYS[1], 'msg', ARGV[5])
  redis.call('SET', KEYS[2], ARGV[7], 'EX', ARGV[6])
end
redis.call('EXPIRE', KEYS[1], ARGV[6])
return 1
"""

# KEYS: open index, created index, failed index, updated index, fallback reasons.
# ARGV: record prefix, delivery prefix, ref prefix, state index prefix, fallback index
# prefix, number of states, the states, then (record id, its reply key) pairs.
# A record is taken out of the console's indexes of its state and reason, or, when its hash
# is already gone (expired), of every state's and reason's.
_UNINDEX_FN = """
local function unindex(id, state, reason, states)
  redis.call('ZREM', KEYS[4], id)
  if state then
    redis.call('ZREM', ARGV[4] .. state, id)
  else
    for _, name in ipairs(states) do redis.call('ZREM', ARGV[4] .. name, id) end
  end
  if reason and reason ~= '' then
    redis.call('ZREM', ARGV[5] .. reason, id)
  elseif not state then
    for _, name in ipairs(redis.call('SMEMBERS', KEYS[5])) do
      redis.call('ZREM', ARGV[5] .. name, id)
    end
  end
end
"""
_PURGE = (
    _UNINDEX_FN
    + """
local count = 0
local states = {}
local s = tonumber(ARGV[6])
for j = 1, s do states[j] = ARGV[6 + j] end
for i = 7 + s, #ARGV, 2 do
  local id = ARGV[i]
  local rec = ARGV[1] .. id
  local row = redis.call('HMGET', rec, 'o', 's', 'f')
  local outbound = row[1]
  unindex(id, row[2], row[3], states)
  if outbound and outbound ~= '' then redis.call('DEL', ARGV[2] .. outbound) end
  for _, name in ipairs({ARGV[i + 1], id}) do
    local ref = redis.call('GET', ARGV[3] .. name)
    if ref then redis.call('DEL', ARGV[2] .. ref) end
    redis.call('DEL', ARGV[3] .. name)
  end
  count = count + redis.call('DEL', rec)
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
end
return count
"""
)

# One page of the console's record list. KEYS: an index (ids by last update). ARGV: highest
# score ('(' before it: excluded), lowest score, cursor score ('' for none), cursor id,
# records wanted, record prefix, state the records must be in ('' for any), most entries
# looked at. Entries at the cursor's score are taken only below its id (a sorted set orders
# ties by id, in byte order: so does less(), as Lua's < follows the server's locale).
# Returns {1 if the index was read to its end else 0, score and id of the last entry looked
# at, then data, score and id of each record found, newest first}.
_PAGE = """
local function less(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local want, most = tonumber(ARGV[5]), tonumber(ARGV[8])
local cursor = ARGV[3] ~= '' and tonumber(ARGV[3])
local chunk = math.min(most, math.max(want, 64))
local out, found, seen = {0, '', ''}, 0, 0
while true do
  local page = redis.call('ZRANGE', KEYS[1], ARGV[1], ARGV[2], 'BYSCORE', 'REV', 'LIMIT', seen,
    chunk, 'WITHSCORES')
  for i = 1, #page, 2 do
    local id, score = page[i], page[i + 1]
    seen = seen + 1
    out[2], out[3] = score, id
    if not cursor or tonumber(score) < cursor or less(id, ARGV[4]) then
      local row = redis.call('HMGET', ARGV[6] .. id, 'd', 's')
      if row[1] and (ARGV[7] == '' or row[2] == ARGV[7]) then
        local n = #out
        out[n + 1], out[n + 2], out[n + 3] = row[1], score, id
        found = found + 1
        if found == want then return out end
      end
    end
    if seen >= most then return out end
  end
  if #page < 2 * chunk then
    out[1] = 1
    return out
  end
end
"""

# KEYS: instances. ARGV: this instance, now. This instance's heartbeat; returns the beat
# Redis held for it before (false if none).
_BEAT = """
local before = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return before
"""

# KEYS: instances, open index. ARGV: this instance, dead before, record prefix, offset,
# count, lease prefix. If some instance's last beat is older than the bound, the open
# records at [offset, offset + count) of the open index that one owned are made this
# instance's, and the lease on a record's current step, if a dead instance holds it (it died
# mid-step), is freed: else the adopted step would be "busy" until the lease ran out.
# Returns {records looked at, id, state, id, state, ...}; {-1} when no instance is dead. A
# record is adopted by one instance only: the script is atomic.
_ADOPT = """
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2])
if #dead == 0 then return {-1} end
local is_dead = {}
for _, id in ipairs(dead) do is_dead[id] = true end
local first = tonumber(ARGV[4])
local ids = redis.call('ZRANGE', KEYS[2], first, first + tonumber(ARGV[5]) - 1)
local out = {#ids}
for _, id in ipairs(ids) do
  local row = redis.call('HMGET', ARGV[3] .. id, 'q', 's')
  if row[1] and is_dead[row[1]] then
    redis.call('HSET', ARGV[3] .. id, 'q', ARGV[1])
    local lease = ARGV[6] .. id .. ':' .. row[2]
    local holder = redis.call('GET', lease)
    if holder and is_dead[string.match(holder, '^([^:]*):') or ''] then
      redis.call('DEL', lease)
    end
    out[#out + 1] = id
    out[#out + 1] = row[2]
  end
end
return out
"""

# KEYS: lease. ARGV: owner.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

EncodableT = bytes | str | int | float
# Records of the open index looked at per adoption call, so one call never blocks Redis long.
ADOPT_SLICE = 1000
# The most records one page of list_records returns, and the most index entries one page
# looks at (a page filtered by state and reason reads the reason's index and skips the
# records in other states): a page that stops there is shorter, with a cursor to go on.
MAX_PAGE = 500
PAGE_SCAN = 2000
# Counter names joined for a script: no name holds a space (domain.ops_metrics).
_CREATED_COUNTERS = " ".join(created_counters())

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Record)
_errors_decoder = msgspec.json.Decoder(list[dict[str, Any]])
_turn_encoder = msgspec.json.Encoder()
_turn_decoder = msgspec.json.Decoder(Turn)


def connect(url: str, timeout_seconds: float = 2.0) -> redis.Redis:
    """A pooled client with bounded timeouts and one quick retry on a dropped connection."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        # One retry when the connection is gone (a pooled connection to a restarted Redis),
        # never after a timeout: a write that timed out may have run, and running it again
        # would turn a created record into a "duplicate" or a saved step into "stale".
        retry=Retry(
            ExponentialBackoff(cap=0.5, base=0.05),
            retries=1,
            supported_errors=(RedisConnectionError,),
        ),
        health_check_interval=30,
        max_connections=64,
    )


def _bucket_ttl_ms(slot: SlotRequest) -> int:
    """The bucket is full again after burst * per_seconds: it may expire then."""
    return max(1000, int((slot.burst * slot.per_seconds + 1) * 1000))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _page_top(query: RecordQuery) -> tuple[str, tuple[float, str] | None]:
    """The highest score of a page, and the cursor whose ties it must skip (None when the
    `until` bound is below the cursor, which then excludes nothing more)."""
    if query.before is not None and (query.until is None or query.before[0] < query.until):
        return repr(float(query.before[0])), query.before
    if query.until is not None:
        return f"({float(query.until)!r}", None
    return "+inf", None


def _record(row: Sequence[Any]) -> Record:
    """A record from a load() row: {data, status, errors, outbound id, conversation}."""
    record = _decoder.decode(row[0])
    if not record.conversation and len(row) > 4 and row[4]:
        record.conversation = _text(row[4])
    record.delivery_status = row[1].decode() if row[1] else None
    record.delivery_errors = _errors_decoder.decode(row[2]) if row[2] else []
    record.delivery_outbound_id = row[3].decode() if row[1] and row[3] else None
    return record


class RedisStore:
    """StateStore on Redis, safe for many instances at once."""

    def __init__(
        self,
        client: redis.Redis,
        terminal_states: Collection[str],
        retention_seconds: float,
        keys: RedisKeys | None = None,
        instance_id: str | None = None,
        states: Collection[str] = (),
        require_aof: bool = False,
    ) -> None:
        """`instance_id` names this process in the records it writes (see `adopt_orphans`).
        `states`: every state of the statechart (the terminal ones are added), which the
        console's counts per state read and purge clears a record that expired from.
        `require_aof`: creates fail with StoreNotDurable, writing nothing, while Redis has
        no append-only file (see _CREATE)."""
        self.client = client
        self.require_aof = require_aof
        self.keys = keys or RedisKeys()
        self.instance_id = instance_id or uuid.uuid4().hex
        self.ttl = int(retention_seconds)
        # Purge deletes records at the retention; the TTL is the safety net (see RedisKeys).
        self.record_ttl = self.ttl + RECORD_TTL_GRACE_SECONDS
        self._terminal = frozenset(terminal_states)
        self._states = sorted(self._terminal | set(states))
        self._create = client.register_script(_CREATE)
        self._save = client.register_script(_SAVE)
        self._get = client.register_script(_GET)
        self._status = client.register_script(_STATUS)
        self._purge = client.register_script(_PURGE)
        self._release = client.register_script(_RELEASE)
        self._take_slot = client.register_script(_TAKE_SLOT)
        self._lease_get = client.register_script(_LEASE_GET)
        self._finish = client.register_script(_FINISH)
        self._adopt = client.register_script(_ADOPT)
        self._beat = client.register_script(_BEAT)
        self._page = client.register_script(_PAGE)
        self._resolve = client.register_script(_RESOLVE)
        self._move = client.register_script(_MOVE)
        # The hot path's scripts, on the wire when the client's connection allows one (TCP
        # or TLS), else on redis-py like the rest.
        self._wire = RedisWire.for_client(client)
        self._wire_create = Script(_CREATE)
        self._wire_lease_get = Script(_LEASE_GET)
        self._wire_finish = Script(_FINISH)
        self._wire_status = Script(_STATUS)
        self._wire_resolve = Script(_RESOLVE)

    async def _hot(
        self, script: AsyncScript, wired: Script, keys: list[str], args: list[EncodableT]
    ) -> Any:
        """Run a hot-path script: on the wire, or on redis-py without one."""
        if self._wire is not None:
            return await self._wire.evalsha(wired, keys, args)
        return await script(keys=keys, args=args)

    async def create_if_absent(self, records: Sequence[Record]) -> list[bool]:
        if not records:
            return []
        keys = [self.keys.record(r.message_id) for r in records]
        keys += [self.keys.open_index, self.keys.created_index, self.keys.failed_index]
        keys += [self.keys.updated_index, self.keys.fallback_reasons]
        args: list[EncodableT] = [self.record_ttl, FAILED_STATE, self.instance_id]
        args += [self.keys.state_index(""), self.keys.fallback_index(""), _CREATED_COUNTERS]
        args.append("1" if self.require_aof else "")
        for r in records:
            args += [r.message_id, r.version, r.state, r.created_at, r.updated_at]
            args += [_encoder.encode(r), r.conversation, r.fallback_reason or ""]
            args += [
                self.keys.counters(MINUTE, bucket_of(r.created_at, MINUTE)),
                self.keys.counters(HOUR, bucket_of(r.created_at, HOUR)),
            ]
        try:
            result = await self._hot(self._create, self._wire_create, keys, args)
        except ResponseError as error:
            if str(error).startswith("NOTDURABLE"):
                raise StoreNotDurable(f"redis: {error}") from error
            raise StoreUnavailable(f"redis: {error}") from error
        except RedisError as error:
            raise StoreUnavailable(f"redis: {error}") from error
        return [bool(flag) for flag in result]

    async def get(self, message_id: str) -> Record | None:
        keys = [self.keys.record(message_id), self.keys.delivery_ref(reply_key(message_id))]
        try:
            row = await self._get(keys=keys, args=[self.keys.delivery("")])
        except RedisError as error:
            raise StoreUnavailable(f"redis: {error}") from error
        return None if row is None else _record(row)

    async def lease_step(
        self, name: str, owner: str, seconds: float, message_id: str, turns: int = 0
    ) -> StepLoad:
        keys = [
            self.keys.record(message_id),
            self.keys.delivery_ref(reply_key(message_id)),
            self.keys.lease(name),
        ]
        args: list[EncodableT] = [
            self.keys.delivery(""),
            owner,
            max(1, int(seconds * 1000)),
            max(0, turns),
            self.keys.conversation(""),
        ]
        try:
            row = await self._hot(self._lease_get, self._wire_lease_get, keys, args)
        except RedisError as error:
            raise StoreUnavailable(f"redis: {error}") from error
        if not row[0] or len(row) == 1:
            return StepLoad(bool(row[0]))
        found = None if row[6] is None else [_turn_decoder.decode(entry) for entry in row[6]]
        return StepLoad(True, _record(row[1:6]), found)

    async def save(self, record: Record, expected_version: int) -> bool:
        keys, args = self._save_call(record, expected_version)
        ops_keys, ops_args = self._ops_call(record)
        keys += ops_keys
        args += ops_args
        try:
            return bool(await self._save(keys=keys, args=args))
        except RedisError as error:
            raise StoreUnavailable(f"redis: {error}") from error

    async def finish_step(self, commit: StepCommit) -> StepSave:
        record, expected_version = commit.record, commit.expected_version
        name, owner, next_lease = commit.lease.name, commit.lease.owner, commit.next_lease
        slot, turns, customer = commit.slot, commit.turns, commit.customer
        keys, args = self._save_call(record, expected_version)
        record_key = keys[0]
        keys += [
            self.keys.lease(name),
            self.keys.lease(next_lease.name) if next_lease else record_key,
            self.keys.pacing(slot.key) if slot else record_key,
            self.keys.conversation(turns.conversation) if turns else record_key,
        ]
        args.append(owner)
        if next_lease is not None:
            args += [next_lease.owner, max(1, int(next_lease.seconds * 1000))]
        else:
            args += ["", 0]
        if slot is not None:
            args += [repr(slot.now), repr(slot.per_seconds), slot.burst, _bucket_ttl_ms(slot)]
        else:
            args += ["", 0, 0, 0]
        if turns is not None and turns.turns:
            args += [max(1, int(turns.window_seconds)), turns.keep]
        else:
            args += [0, 0]
        ops_keys, ops_args = self._ops_call(record)
        keys += ops_keys
        args += ops_args
        if customer is not None:
            args += [customer.phone_key or "", customer.user_key or "", "1"]
        else:
            args += ["", "", ""]
        args += self._customer_args(None, None)[:3]
        if turns is not None and turns.turns:
            args += [_turn_encoder.encode(turn) for turn in turns.turns]
        try:
            saved, taken, wait, key = await self._hot(self._finish, self._wire_finish, keys, args)
        except RedisError as error:
            raise StoreUnavailable(f"redis: {error}") from error
        return StepSave(bool(saved), float(wait), bool(taken), _text(key) if saved else "")

    def _save_call(
        self, record: Record, expected_version: int
    ) -> tuple[list[str], list[EncodableT]]:
        keys = [self.keys.record(record.message_id), self.keys.open_index, self.keys.failed_index]
        args: list[EncodableT] = [
            expected_version,
            record.version,
            record.state,
            record.outbound_message_id or "",
            _encoder.encode(record),
            record.updated_at,
            1 if record.state in self._terminal else 0,
            record.message_id,
            1 if record.state == FAILED_STATE else 0,
            self.instance_id,
            record.conversation,
        ]
        return keys, args

    def _ops_call(self, record: Record) -> tuple[list[str], list[EncodableT]]:
        """The keys and arguments a save adds for the console (see _SAVE_FN)."""
        names = transition_counters(record)
        if names:
            at = record.updated_at
            minute = self.keys.counters(MINUTE, bucket_of(at, MINUTE))
            hour = self.keys.counters(HOUR, bucket_of(at, HOUR))
        else:  # no counter: any key will do
            minute = hour = self.keys.updated_index
        keys = [self.keys.updated_index, minute, hour, self.keys.fallback_reasons]
        args: list[EncodableT] = [
            self.keys.state_index(""),
            self.keys.fallback_index(""),
            record.fallback_reason or "",
            " ".join(names),
        ]
        return keys, args

    async def record_status(self, update: StatusUpdate) -> bool:
        rank = DELIVERY_RANK.get(update.status)
        if rank is None:
            return False
        delivery = self.keys.delivery(update.outbound_message_id)
        ref = self.keys.delivery_ref(update.callback_data) if update.callback_data else delivery
        args: list[EncodableT] = [
            update.status,
            rank,
            update.timestamp,
            _encoder.encode(update.errors),
            update.callback_data or "",
            self.ttl,
            update.outbound_message_id,
        ]
        try:
            return bool(await self._hot(self._status, self._wire_status, [delivery, ref], args))
        except RedisError as error:
            raise StoreUnavailable(f"redis: {error}") from error

    async def open_records(self, older_than: float) -> list[tuple[str, str]]:
        try:
            ids = cast(
                list[bytes],
                await self.client.zrangebyscore(self.keys.open_index, "-inf", f"({older_than}"),
            )
            if not ids:
                return []
            async with self.client.pipeline(transaction=False) as pipe:
                for raw in ids:
                    pipe.hget(self.keys.record(raw.decode()), "s")
                states = await pipe.execute()
            gone = [raw for raw, state in zip(ids, states, strict=True) if state is None]
            if gone:  # expired by TTL: drop them from the index
                await self.client.zrem(self.keys.open_index, *gone)
        except RedisError as error:
            raise StoreUnavailable(f"redis: {error}") from error
        return [
            (raw.decode(), state.decode())
            for raw, state in zip(ids, states, strict=True)
            if state is not None and state.decode() not in self._terminal
        ]

    async def failed_records(self, since: float | None, limit: int) -> list[str]:
        low = "-inf" if since is None else repr(since)
        index = self.keys.failed_index
        try:
            ids = cast(
                list[bytes],
                await self.client.zrangebyscore(index, low, "+inf", start=0, num=limit),
            )
            if not ids:
                return []
            async with self.client.pipeline(transaction=False) as pipe:
                for raw in ids:
                    pipe.hget(self.keys.record(raw.decode()), "s")
                states = await pipe.execute()
            gone = [raw for raw, state in zip(ids, states, strict=True) if state is None]
            if gone:  # expired by TTL: drop them from the index
                await self.client.zrem(index, *gone)
        except RedisError as error:
            raise StoreUnavailable(f"redis: {error}") from error
        return [
            raw.decode()
            for raw, state in zip(ids, states, strict=True)
            if state is not None and state.decode() == FAILED_STATE
        ]

    async def purge(self, created_before: float) -> int:
        keys = [self.keys.open_index, self.keys.created_index, self.keys.failed_index]
        keys += [self.keys.updated_index, self.keys.fallback_reasons]
        prefixes: list[EncodableT] = [
            self.keys.record(""),
            self.keys.delivery(""),
            self.keys.delivery_ref(""),
            self.keys.state_index(""),
            self.keys.fallback_index(""),
            len(self._states),
            *self._states,
        ]
        total = 0
        try:
            while True:  # in slices of 500, so one call never blocks Redis for long
                found = await self.client.zrangebyscore(
                    self.keys.created_index, "-inf", f"({created_before!r}", start=0, num=500
                )
                ids = [item.decode() if isinstance(item, bytes) else str(item) for item in found]
                if not ids:
                    return total
                # Statuses name their record by its reply key (older replies by its id):
                # the key is computed here, as Lua has no HMAC.
                pairs = [
                    value for message_id in ids for value in (message_id, reply_key(message_id))
                ]
                total += int(await self._purge(keys=keys, args=[*prefixes, *pairs]))
                if len(ids) < 500:
                    return total
        except RedisError as error:
            raise StoreUnavailable(f"redis: {error}") from error

    async def state_counts(self) -> dict[str, int]:
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for state in self._states:
                    pipe.zcard(self.keys.state_index(state))
                counts = await pipe.execute()
        except RedisError as error:
            raise StoreUnavailable(f"redis: {error}") from error
        return {state: int(n) for state, n in zip(self._states, counts, strict=True) if n}

    async def counter_buckets(self, width: int, since: float) -> list[tuple[int, dict[str, int]]]:
        now = time.time()
        # One bucket past now's: an instance whose clock runs a little ahead writes there.
        starts = range(first_read(width, since, now), bucket_of(now, width) + 2 * width, width)
        if not starts:
            return []
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for start in starts:
                    pipe.hgetall(self.keys.counters(width, start))
                found: list[dict[bytes, bytes]] = await pipe.execute()
        except RedisError as error:
            raise StoreUnavailable(f"redis: {error}") from error
        return [
            (start, {name.decode(): int(n) for name, n in counters.items()})
            for start, counters in zip(starts, found, strict=True)
            if counters
        ]

    async def list_records(self, query: RecordQuery) -> RecordPage:
        limit = min(query.limit, MAX_PAGE)
        if limit <= 0:
            return RecordPage([], None)
        index, only_state = self._page_index(query)
        high, cursor = _page_top(query)
        args: list[EncodableT] = [
            high,
            "-inf" if query.since is None else repr(float(query.since)),
            "" if cursor is None else repr(float(cursor[0])),
            "" if cursor is None else cursor[1],
            limit + 1,  # one more: whether a next page exists
            self.keys.record(""),
            only_state,
            max(PAGE_SCAN, limit + 1),
        ]
        try:
            row = await self._page(keys=[index], args=args)
        except RedisError as error:
            raise StoreUnavailable(f"redis: {error}") from error
        found = row[3:]
        records = [_decoder.decode(data) for data in found[0 : 3 * limit : 3]]
        if len(found) > 3 * limit:  # the last record shown is the cursor
            last = found[3 * limit - 2 : 3 * limit]
        elif not row[0] and row[2]:  # stopped at PAGE_SCAN: go on after the last entry seen
            last = row[1:3]
        else:
            return RecordPage(records, None)
        return RecordPage(records, (float(last[0]), _text(last[1])))

    def _page_index(self, query: RecordQuery) -> tuple[str, str]:
        """The index a page reads, and the state its records must be in ('' for any): a
        reason's index is read for a reason and a state, as it holds fewer records."""
        if query.fallback_reason is not None:
            return self.keys.fallback_index(query.fallback_reason), query.state or ""
        if query.state is not None:
            return self.keys.state_index(query.state), ""
        return self.keys.updated_index, ""

    async def append_turns(
        self, conversation: str, turns: Sequence[Turn], window_seconds: float, keep: int
    ) -> None:
        key = self.keys.conversation(conversation)
        entries = [_turn_encoder.encode(turn) for turn in turns]
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.rpush(key, *entries)
                pipe.ltrim(key, -keep, -1)
                pipe.expire(key, max(1, int(window_seconds)))
                await pipe.execute()
        except RedisError as error:
            raise StoreUnavailable(f"redis: {error}") from error

    async def recent_turns(self, conversation: str, since: float, limit: int) -> list[Turn]:
        try:
            entries = await self.client.lrange(self.keys.conversation(conversation), -limit, -1)
        except RedisError as error:
            raise StoreUnavailable(f"redis: {error}") from error
        turns = [_turn_decoder.decode(entry) for entry in entries]
        return [turn for turn in turns if turn.at >= since]

    def _customer_args(self, first: str | None, second: str | None) -> list[EncodableT]:
        prefixes = [self.keys.conversation(""), self.keys.alias("")]
        return [*prefixes, self.ttl, first or "", second or ""]

    async def resolve_customer(self, phone_key: str | None, user_key: str | None) -> str:
        args = self._customer_args(phone_key, user_key)
        try:  # on the hot path: one round trip of every accepted message
            customer = await self._hot(self._resolve, self._wire_resolve, [], args)
        except RedisError as error:
            raise StoreUnavailable(f"redis: {error}") from error
        return _text(customer)

    async def move_customer(self, previous_key: str, current_key: str) -> None:
        try:
            await self._move(keys=[], args=self._customer_args(previous_key, current_key))
        except RedisError as error:
            raise StoreUnavailable(f"redis: {error}") from error

    async def acquire_lease(self, name: str, owner: str, seconds: float) -> bool:
        try:
            taken = await self.client.set(
                self.keys.lease(name), owner, nx=True, px=max(1, int(seconds * 1000))
            )
        except RedisError as error:
            raise StoreUnavailable(f"redis: {error}") from error
        return bool(taken)

    async def take_slot(self, key: str, now: float, per_seconds: float, burst: int) -> float:
        ttl_ms = _bucket_ttl_ms(SlotRequest(key, now, per_seconds, burst))
        args: list[EncodableT] = [repr(now), repr(per_seconds), burst, ttl_ms]
        try:
            wait = await self._take_slot(keys=[self.keys.pacing(key)], args=args)
        except RedisError as error:
            raise StoreUnavailable(f"redis: {error}") from error
        return float(wait)

    async def release_lease(self, name: str, owner: str) -> None:
        try:
            await self._release(keys=[self.keys.lease(name)], args=[owner])
        except RedisError as error:
            raise StoreUnavailable(f"redis: {error}") from error

    async def adopt_orphans(self, now: float, dead_after_seconds: float) -> Adoption:
        """Beat for this instance, and take over the open records of instances that have not
        beaten for `dead_after_seconds`: (message id, state) of each record adopted.

        The open index is read in slices; records it skips while it shifts (others finish
        meanwhile) are found by the next call, as a dead instance is forgotten only after a
        pass that found nothing of it.
        """
        try:
            server = await self.client.info("server")
            before = await self._beat(keys=[self.keys.instances], args=[self.instance_id, now])
            adopted = await self._adopt_slices(now - dead_after_seconds)
        except RedisError as error:
            raise StoreUnavailable(f"redis: {error}") from error
        return Adoption(adopted, float(before) if before else None, str(server.get("run_id")))

    async def _adopt_slices(self, dead_before: float) -> list[tuple[str, str]]:
        keys = [self.keys.instances, self.keys.open_index]
        adopted: list[tuple[str, str]] = []
        offset = 0
        while True:
            args: list[EncodableT] = [
                self.instance_id,
                dead_before,
                self.keys.record(""),
                offset,
                ADOPT_SLICE,
                self.keys.lease(""),
            ]
            row = await self._adopt(keys=keys, args=args)
            seen = int(row[0])
            if seen < 0:
                return adopted  # no instance is dead
            values = [v.decode() if isinstance(v, bytes) else str(v) for v in row[1:]]
            adopted += zip(values[::2], values[1::2], strict=True)
            offset += seen
            if seen < ADOPT_SLICE:
                break
        if not adopted:
            await self.client.zremrangebyscore(self.keys.instances, "-inf", f"({dead_before!r}")
        return adopted

    async def retire(self) -> None:
        """Mark this instance dead at once (a graceful stop): the records it still owns are
        adopted at the next beat of a live instance instead of after the heartbeat timeout."""
        try:
            await self.client.zadd(self.keys.instances, {self.instance_id: 0})
        except RedisError as error:
            raise StoreUnavailable(f"redis: {error}") from error

    async def durability(self) -> str:
        """Redis's persistence: `aof`, `rdb`, `aof+rdb`, `none`, or `unknown` when CONFIG is
        refused (managed Redis such as Memorystore) and AOF is off."""
        return (await self.persistence()).mode

    async def persistence(self) -> Persistence:
        """AOF on or off (INFO), its fsync policy and RDB's snapshots (CONFIG GET: None for
        both when CONFIG is refused, as Memorystore does)."""
        try:
            aof = str((await self.client.info("persistence")).get("aof_enabled")) == "1"
            try:
                # One pattern per call: Redis before 7.0 takes no more.
                fsync = await self.client.config_get("appendfsync")
                save = await self.client.config_get("save")
            except ResponseError:
                return Persistence(aof, None, None)
        except RedisError as error:
            raise StoreUnavailable(f"redis: {error}") from error
        policy = str(fsync.get("appendfsync") or "") or None
        return Persistence(aof, policy, bool(str(save.get("save") or "").strip()))

    async def ping(self) -> None:
        try:
            await self.client.ping()
        except RedisError as error:
            raise StoreUnavailable(f"redis: {error}") from error

    async def close(self) -> None:
        if self._wire is not None:
            await self._wire.aclose()
        await self.client.aclose()
