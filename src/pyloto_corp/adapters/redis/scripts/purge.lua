-- purge: records and what hangs off them (deliveries, refs, the console's index entries).
-- KEYS
--   1   open index
--   2   created index
--   3   failed index
--   4   updated index
--   5   fallback reasons (set)
-- ARGV
--   1   record key prefix
--   2   delivery key prefix
--   3   delivery ref prefix
--   4   state index prefix
--   5   fallback index prefix
--   6   conversation records index prefix
--   7   s: the number of states
--   8..7+s   the states
--   then pairs: a record id, its reply key
-- Returns the number of record hashes deleted.
-- A record is taken out of the console's indexes of its state and reason, or, when its hash
-- is already gone (expired), of every state's and reason's; and out of its conversation's
-- index of records (when its hash is gone, listing that index drops it).
local function unindex(id, state, reason, states)
  redis.call('ZREM', KEYS[4], id)
  if state then
    redis.call('ZREM', ARGV[4] .. state, id)
  else
    for _, name in ipairs(states) do redis.call('ZREM', ARGV[4] .. name, id) end
  end
  if reason and reason ~= '' then
    redis.call('ZREM', ARGV[5] .. reason, id)
  elseif not state then
    for _, name in ipairs(redis.call('SMEMBERS', KEYS[5])) do
      redis.call('ZREM', ARGV[5] .. name, id)
    end
  end
end
local count = 0
local states = {}
local s = tonumber(ARGV[7])
for j = 1, s do states[j] = ARGV[7 + j] end
for i = 8 + s, #ARGV, 2 do
  local id = ARGV[i]
  local rec = ARGV[1] .. id
  local row = redis.call('HMGET', rec, 'o', 's', 'f', 'c')
  local outbound = row[1]
  if row[4] and row[4] ~= '' then redis.call('ZREM', ARGV[6] .. row[4], id) end
  unindex(id, row[2], row[3], states)
  if outbound and outbound ~= '' then redis.call('DEL', ARGV[2] .. outbound) end
  for _, name in ipairs({ARGV[i + 1], id}) do
    local ref = redis.call('GET', ARGV[3] .. name)
    if ref then redis.call('DEL', ARGV[2] .. ref) end
    redis.call('DEL', ARGV[3] .. name)
  end
  count = count + redis.call('DEL', rec)
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
end
return count
