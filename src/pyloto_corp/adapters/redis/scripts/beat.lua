-- beat: this instance's heartbeat.
-- KEYS
--   1   instances (ids by last beat)
-- ARGV
--   1   this instance's id
--   2   now
-- Returns the beat Redis held for it before (false if none).
local before = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return before
