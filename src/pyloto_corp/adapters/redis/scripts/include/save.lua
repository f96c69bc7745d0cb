-- save(): a record's version-checked write and the console's indexes and counters, shared by
-- save.lua and finish.lua. Both lay out KEYS and ARGV as scripts.SAVE_KEYS/SAVE_ARGV first
-- and scripts.OPS_KEYS/OPS_ARGV later (their positions are put in by the loader, by name):
-- `current` is the stored {version, state, fallback reason, conversation} (read with the
-- version check). A record naming a conversation is in that one's index of records (scored
-- by its creation), which expires with the records (record_ttl), renewed by each added.
-- @include ops
local function save(current)
  redis.call('HSET', KEYS[1], 'v', ARGV[$argv.version], 's', ARGV[$argv.state],
    'o', ARGV[$argv.outbound_id], 'd', ARGV[$argv.data], 'q', ARGV[$argv.instance],
    'c', ARGV[$argv.conversation], 'f', ARGV[$argv.fallback_reason])
  local conversation = ARGV[$argv.conversation]
  if current[4] and current[4] ~= '' and current[4] ~= conversation then
    redis.call('ZREM', ARGV[$argv.records_prefix] .. current[4], ARGV[$argv.message_id])
  end
  if conversation ~= '' then
    local records = ARGV[$argv.records_prefix] .. conversation
    redis.call('ZADD', records, ARGV[$argv.created_at], ARGV[$argv.message_id])
    redis.call('EXPIRE', records, ARGV[$argv.record_ttl])
  end
  index(KEYS[$keys.updated_index], KEYS[$keys.fallback_reasons], ARGV[$argv.state_prefix],
    ARGV[$argv.fallback_prefix], ARGV[$argv.message_id], ARGV[$argv.updated_at], current[2],
    ARGV[$argv.state], current[3], ARGV[$argv.fallback_reason])
  if ARGV[$argv.counters] ~= '' then
    count(KEYS[$keys.minute_counters], ARGV[$argv.counters], 1, MINUTE_TTL)
    count(KEYS[$keys.hour_counters], ARGV[$argv.counters], 1, HOUR_TTL)
  end
  if ARGV[$argv.amounts] ~= '' then
    add(KEYS[$keys.day_counters], ARGV[$argv.amounts], DAY_TTL)
  end
  if ARGV[$argv.terminal] == '1' then
    redis.call('ZREM', KEYS[$keys.open_index], ARGV[$argv.message_id])
  else
    redis.call('ZADD', KEYS[$keys.open_index], ARGV[$argv.updated_at], ARGV[$argv.message_id])
  end
  if ARGV[$argv.failed] == '1' then
    redis.call('ZADD', KEYS[$keys.failed_index], ARGV[$argv.updated_at], ARGV[$argv.message_id])
  else
    redis.call('ZREM', KEYS[$keys.failed_index], ARGV[$argv.message_id])
  end
end
