-- chats: conversations from an index of them (one mode's, or all), lowest score first.
-- KEYS
--   1   the index (keys by `since`)
-- ARGV
--   1   conversation hash prefix
--   2   conversations wanted
--   3   the mode they must be in ('' for any)
-- Returns {key, then its fields (include/chat.lua's CHAT_FIELDS), per conversation}. A key
-- whose hash is gone (expired) or, in a mode's index, is in another mode now (it expired and
-- was made anew) leaves the index.
-- @include chat
local want = tonumber(ARGV[2])
local out, found, offset = {}, 0, 0
while found < want do
  local keys = redis.call('ZRANGE', KEYS[1], offset, offset + want - 1)
  for _, key in ipairs(keys) do
    local row = chat_read(ARGV[1] .. key)
    if not row[1] or (ARGV[3] ~= '' and row[1] ~= ARGV[3]) then
      redis.call('ZREM', KEYS[1], key)
    else
      offset = offset + 1
      out[#out + 1] = key
      for i = 1, #CHAT_FIELDS do out[#out + 1] = row[i] end
      found = found + 1
      if found == want then return out end
    end
  end
  if #keys < want then return out end
end
return out
