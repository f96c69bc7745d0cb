-- chat_records: a conversation's last records, newest first.
-- KEYS
--   1   its index of records (ids by creation)
-- ARGV
--   1   record key prefix
--   2   records wanted
-- Returns {JSON, conversation (field 'c'), per record}, newest first; the ids of records
-- whose hash is gone (expired) leave the index.
local want = tonumber(ARGV[2])
local out, found, offset = {}, 0, 0
while found < want do
  local ids = redis.call('ZRANGE', KEYS[1], offset, offset + want - 1, 'REV')
  for _, id in ipairs(ids) do
    local row = redis.call('HMGET', ARGV[1] .. id, 'd', 'c')
    if not row[1] then
      redis.call('ZREM', KEYS[1], id)
    else
      offset = offset + 1
      out[#out + 1] = row[1]
      out[#out + 1] = row[2]
      found = found + 1
      if found == want then return out end
    end
  end
  if #ids < want then return out end
end
return out
