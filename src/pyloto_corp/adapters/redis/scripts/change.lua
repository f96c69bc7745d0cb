-- change: a write to one customer's conversation (made in 'bot' if missing), atomically.
-- KEYS
--   1   the index of all conversations
-- ARGV
--   1   conversation hash prefix
--   2   audit trail prefix
--   3   mode index prefix
--   4   TTL (s)
--   5   the conversation's key
--   6..15  the write, as scripts.CHAT_WRITE lays it out (see include/chat.lua)
-- Returns {0} when the write expects another mode (nothing written), else {1, its fields
-- (include/chat.lua's CHAT_FIELDS), its audit trail}.
-- @include chat
local where = {hash = ARGV[1], audit = ARGV[2], modes = ARGV[3], all = KEYS[1], ttl = ARGV[4]}
local key = ARGV[5]
if not chat_apply(where, key, chat_write_at(6)) then return {0} end
return {1, chat_read(ARGV[1] .. key), redis.call('LRANGE', ARGV[2] .. key, 0, -1)}
