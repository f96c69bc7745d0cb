-- ops_account_add: a console account, unless its name is taken (adapters/redis/accounts.py).
-- KEYS
--   1   the account's hash
--   2   the set of every account name
-- ARGV
--   1   name
--   2   role
--   3   password hash
--   4   created at
-- Returns 1 when added, 0 when the name was taken (nothing written).
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'r', ARGV[2], 'h', ARGV[3], 't', ARGV[4])
return 1
