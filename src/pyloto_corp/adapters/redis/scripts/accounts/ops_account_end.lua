-- ops_account_end: end every session of a console account, and with remove = 1 delete the
-- account too, in one step (no instance sees the account gone and a session still open).
-- KEYS
--   1   the account's set of session keys
--   2   the account's hash
--   3   the set of every account name
-- ARGV
--   1   session key prefix
--   2   remove: 1 to delete the account, 0 to end its sessions only
--   3   name
-- Returns the sessions ended; -1 when the account was to be removed and there was none.
local ended = 0
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  ended = ended + redis.call('DEL', ARGV[1] .. key)
end
redis.call('DEL', KEYS[1])
if ARGV[2] == '1' then
  redis.call('DEL', KEYS[2])
  if redis.call('SREM', KEYS[3], ARGV[3]) == 0 then return -1 end
end
return ended
