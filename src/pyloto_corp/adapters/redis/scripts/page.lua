-- page: one page of the console's record list.
-- KEYS
--   1   an index (ids by last update)
-- ARGV
--   1   highest score ('(' before it: excluded)
--   2   lowest score
--   3   cursor score ('' for none)
--   4   cursor id
--   5   records wanted
--   6   record key prefix
--   7   state the records must be in ('' for any)
--   8   most entries looked at
-- Returns {1 if the index was read to its end else 0, score and id of the last entry looked
-- at, then data, score and id of each record found, newest first}.
-- Entries at the cursor's score are taken only below its id (a sorted set orders ties by id,
-- in byte order: so does less(), as Lua's < follows the server's locale).
local function less(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local want, most = tonumber(ARGV[5]), tonumber(ARGV[8])
local cursor = ARGV[3] ~= '' and tonumber(ARGV[3])
local chunk = math.min(most, math.max(want, 64))
local out, found, seen = {0, '', ''}, 0, 0
while true do
  local page = redis.call('ZRANGE', KEYS[1], ARGV[1], ARGV[2], 'BYSCORE', 'REV', 'LIMIT', seen,
    chunk, 'WITHSCORES')
  for i = 1, #page, 2 do
    local id, score = page[i], page[i + 1]
    seen = seen + 1
    out[2], out[3] = score, id
    if not cursor or tonumber(score) < cursor or less(id, ARGV[4]) then
      local row = redis.call('HMGET', ARGV[6] .. id, 'd', 's')
      if row[1] and (ARGV[7] == '' or row[2] == ARGV[7]) then
        local n = #out
        out[n + 1], out[n + 2], out[n + 3] = row[1], score, id
        found = found + 1
        if found == want then return out end
      end
    end
    if seen >= most then return out end
  end
  if #page < 2 * chunk then
    out[1] = 1
    return out
  end
end
