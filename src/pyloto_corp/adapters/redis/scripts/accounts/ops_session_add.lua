-- ops_session_add: a console session, expiring at its end, listed under its account (whose
-- list drops the sessions that ended and lives as long as the latest).
-- KEYS
--   1   the session's hash
--   2   the account's set of session keys
-- ARGV
--   1   account name
--   2   role
--   3   CSRF token
--   4   end (unix seconds)
--   5   end (unix ms)
--   6   session key prefix
--   7   session key
--   8   lifetime (ms)
-- Returns 1.
redis.call('HSET', KEYS[1], 'n', ARGV[1], 'r', ARGV[2], 'c', ARGV[3], 'e', ARGV[4])
redis.call('PEXPIREAT', KEYS[1], ARGV[5])
for _, key in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if redis.call('EXISTS', ARGV[6] .. key) == 0 then redis.call('SREM', KEYS[2], key) end
end
redis.call('SADD', KEYS[2], ARGV[7])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[8]) then
  redis.call('PEXPIREAT', KEYS[2], ARGV[5])
end
return 1
