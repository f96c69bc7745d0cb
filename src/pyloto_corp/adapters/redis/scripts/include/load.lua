-- load(), shared by get.lua and lease_get.lua (KEYS[1]: the record, KEYS[2]: its delivery
-- ref; ARGV[1]: the delivery key prefix) returns {data, status, errors, outbound id,
-- conversation} with the highest-ranked status of the record's sends, or nil when there is
-- no record. Field 'c' is the record's conversation even where its JSON has none (the
-- accept's save resolves it in the script).
local function load()
  local r = redis.call('HMGET', KEYS[1], 'd', 'o', 'c')
  if not r[1] then return nil end
  local best, status, errors, found = -1, false, false, false
  local candidates = {r[2], redis.call('GET', KEYS[2])}
  for _, outbound in ipairs(candidates) do
    if outbound and outbound ~= '' then
      local d = redis.call('HMGET', ARGV[1] .. outbound, 'rank', 'status', 'errors')
      if d[1] and tonumber(d[1]) > best then
        best, status, errors, found = tonumber(d[1]), d[2], d[3], outbound
      end
    end
  end
  return {r[1], status, errors, found, r[3]}
end
