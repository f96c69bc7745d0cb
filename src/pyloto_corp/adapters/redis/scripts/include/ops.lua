-- The operations console's read model, kept by the scripts that write records (see
-- RedisKeys): index() moves a record between the indexes of its state and fallback reason
-- and rescores it in the index of all records; count() adds counters (names separated by
-- spaces, which names never hold) to one bucket's hash and renews its expiry, and add() adds
-- amounts ('name n name n ...': the day's cost counters) the same way. The TTLs are the
-- counter buckets' (redis.keys.COUNTER_TTL_SECONDS), put in by the loader.
local MINUTE_TTL, HOUR_TTL, DAY_TTL = $MINUTE_TTL, $HOUR_TTL, $DAY_TTL
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
local function add(key, amounts, ttl)
  local name
  for part in string.gmatch(amounts, '[^ ]+') do
    if name then
      redis.call('HINCRBY', key, name, part)
      name = nil
    else
      name = part
    end
  end
  redis.call('EXPIRE', key, ttl)
end
