-- status: a delivery status, kept only when it ranks above the stored one.
-- KEYS
--   1   the delivery's hash
--   2   the delivery ref (or the delivery key again when there is no callback data)
-- ARGV
--   1   status
--   2   its rank
--   3   at
--   4   errors (JSON)
--   5   callback data ('' if none)
--   6   TTL (s)
--   7   outbound id
-- Returns 1 when kept, 0 when it ranks no higher than the stored one.
local current = tonumber(redis.call('HGET', KEYS[1], 'rank') or '0')
if tonumber(ARGV[2]) <= current then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'rank', ARGV[2], 'at', ARGV[3], 'errors', ARGV[4])
if ARGV[5] ~= '' then
  redis.call('HSETNX', KEYS[1], 'msg', ARGV[5])
  redis.call('SET', KEYS[2], ARGV[7], 'EX', ARGV[6])
end
redis.call('EXPIRE', KEYS[1], ARGV[6])
return 1
