-- lease_get: a step's lease, its record and the turns it reads in one round trip.
-- KEYS
--   1   the record's hash
--   2   its delivery ref
--   3   the step's lease
-- ARGV
--   1   delivery key prefix
--   2   owner of the lease
--   3   lease length (ms)
--   4   turns wanted (0 for none)
--   5   conversation key prefix
-- Returns {0} when the lease is held by another, {1} when taken but there is no record, else
-- {1, data, status, errors, outbound id, conversation, turns}: turns is false unless ARGV[4]
-- > 0, else the last ARGV[4] entries of the conversation the record names (key: ARGV[5] ..
-- its field 'c'), false if it names none.
-- @include load
if not redis.call('SET', KEYS[3], ARGV[2], 'NX', 'PX', ARGV[3]) then return {0} end
local row = load()
if not row then return {1} end
local turns = false
local wanted = tonumber(ARGV[4])
if wanted > 0 then
  local conversation = redis.call('HGET', KEYS[1], 'c')
  if conversation and conversation ~= '' then
    turns = redis.call('LRANGE', ARGV[5] .. conversation, -wanted, -1)
  end
end
return {1, row[1], row[2], row[3], row[4], row[5], turns}
