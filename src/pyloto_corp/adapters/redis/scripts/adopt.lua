-- adopt: one slice of the open records of dead instances, made this instance's.
-- KEYS
--   1   instances (ids by last beat)
--   2   open index
--   3   adoptions tally (hash: instance id -> records adopted, id:at -> last time)
-- ARGV
--   1   this instance's id
--   2   dead before (an instance whose last beat is older is dead)
--   3   record key prefix
--   4   offset into the open index
--   5   count of entries looked at
--   6   lease key prefix
--   7   now
--   8   the tally's TTL in seconds
-- If some instance is dead, the open records at [offset, offset + count) of the open index
-- that one owned are made this instance's, and the lease on a record's current step, if a
-- dead instance holds it (it died mid-step), is freed: else the adopted step would be "busy"
-- until the lease ran out.
-- The records adopted are added to this instance's count in the tally, in the same call.
-- Returns {records looked at, id, state, id, state, ...}; {-1} when no instance is dead. A
-- record is adopted by one instance only: the script is atomic.
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
local taken = (#out - 1) / 2
if taken > 0 then
  redis.call('HINCRBY', KEYS[3], ARGV[1], taken)
  redis.call('HSET', KEYS[3], ARGV[1] .. ':at', ARGV[7])
  redis.call('EXPIRE', KEYS[3], tonumber(ARGV[8]))
end
return out
