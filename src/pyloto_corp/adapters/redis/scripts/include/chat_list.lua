-- chat_list(index, prefix, want): a conversation's last `want` records, newest first, as
-- {JSON, conversation (field 'c')} per record, from its index of records (ids by creation;
-- `prefix` .. id is a record's hash). The ids of records whose hash is gone (expired) leave
-- the index. With `deliveries` (the delivery key prefix) each record also has its reply's
-- delivery status ('' for none) after them. Shared by chat_records.lua and lease_get.lua.
local function chat_list(index, prefix, want, deliveries)
  local out, found, offset = {}, 0, 0
  while found < want do
    local ids = redis.call('ZRANGE', index, offset, offset + want - 1, 'REV')
    for _, id in ipairs(ids) do
      local row = redis.call('HMGET', prefix .. id, 'd', 'c', 'o')
      if not row[1] then
        redis.call('ZREM', index, id)
      else
        offset = offset + 1
        out[#out + 1] = row[1]
        out[#out + 1] = row[2]
        if deliveries then
          local status = false
          if row[3] and row[3] ~= '' then
            status = redis.call('HGET', deliveries .. row[3], 'status')
          end
          out[#out + 1] = status or ''
        end
        found = found + 1
        if found == want then return out end
      end
    end
    if #ids < want then return out end
  end
  return out
end
