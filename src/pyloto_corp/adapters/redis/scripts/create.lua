-- create: create-if-absent of a batch of records, with the console's indexes and counters.
-- KEYS
--   1..n   the record hash of each record of the batch (n = #KEYS - 5)
--   n+1    open index
--   n+2    created index
--   n+3    failed index
--   n+4    updated index
--   n+5    fallback reasons (set)
-- ARGV
--   1      record TTL (s)
--   2      the failed state's name
--   3      this instance's id (field 'q')
--   4      state index prefix
--   5      fallback index prefix
--   6      counter names of a creation (separated by spaces)
--   7      '1' to require AOF, else ''
--   8      conversation records index prefix
--   then 10 per record (from a = 8 + (i - 1) * 10):
--   a+1    message id
--   a+2    version
--   a+3    state
--   a+4    created_at
--   a+5    updated_at
--   a+6    the record's JSON
--   a+7    conversation
--   a+8    fallback reason ('' for none)
--   a+9    its minute counter key
--   a+10   its hour counter key
-- Returns {1 if created else 0, per record}.
-- Every record hash names, in field 'q', the instance that wrote it last: with the local
-- queue that instance holds the record's next task, so if it dies the record is an orphan
-- (see adopt.lua). A record created naming its conversation (an agent's reply) is added to
-- that one's index of records, which expires with the records. The counters of the records created are added once per bucket. When AOF
-- is required and off, nothing is written and the reply is a NOTDURABLE error: the check and
-- the write are one atomic step, so a Redis whose AOF was switched off (CONFIG SET
-- appendonly no) or that restarted without it acknowledges nothing from then on.
-- @include ops
if ARGV[7] == '1' and not string.find(redis.call('INFO', 'persistence'), 'aof_enabled:1', 1,
    true) then
  return redis.error_reply('NOTDURABLE the Redis has no append-only file')
end
local ttl = tonumber(ARGV[1])
local n = #KEYS - 5
local open, created, failed = KEYS[n + 1], KEYS[n + 2], KEYS[n + 3]
local result, minutes, hours = {}, {}, {}
for i = 1, n do
  local a = 8 + (i - 1) * 10
  if redis.call('EXISTS', KEYS[i]) == 1 then
    result[i] = 0
  else
    local id, state, at, reason = ARGV[a + 1], ARGV[a + 3], ARGV[a + 5], ARGV[a + 8]
    redis.call('HSET', KEYS[i], 'v', ARGV[a + 2], 's', state, 'o', '', 'd', ARGV[a + 6],
      'q', ARGV[3], 'c', ARGV[a + 7], 'f', reason)
    redis.call('EXPIRE', KEYS[i], ttl)
    if ARGV[a + 7] ~= '' then
      local records = ARGV[8] .. ARGV[a + 7]
      redis.call('ZADD', records, ARGV[a + 4], id)
      redis.call('EXPIRE', records, ttl)
    end
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
