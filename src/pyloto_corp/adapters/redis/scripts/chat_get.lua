-- chat_get: one conversation with its audit trail.
-- KEYS
--   1   the conversation's hash
--   2   its audit trail
-- ARGV: none.
-- Returns {its fields (include/chat.lua's CHAT_FIELDS, the first false when there is no
-- conversation), its audit trail}.
-- @include chat
return {chat_read(KEYS[1]), redis.call('LRANGE', KEYS[2], 0, -1)}
