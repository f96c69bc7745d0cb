-- lease_get: a step's lease, its record, the turns it reads and its conversation in one
-- round trip.
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
--   6   conversation hash prefix
--   7   the conversation's last records wanted (0 for none)
--   8   index of a conversation's records, prefix
--   9   record key prefix
-- Returns {0} when the lease is held by another, {1} when taken but there is no record, else
-- {1, data, status, errors, outbound id, conversation, turns, its conversation's fields,
-- its records}:
-- turns is false unless ARGV[4] > 0, else the last ARGV[4] entries of the conversation the
-- record names (key: ARGV[5] .. its field 'c'), false if it names none; the fields are
-- include/chat.lua's CHAT_FIELDS of the conversation it names (hash: ARGV[6] .. field
-- 'c'), false if it names none or none is stored; its records are false unless ARGV[7] > 0,
-- else include/chat_list.lua's list of the conversation's last ARGV[7] records.
-- @include load
-- @include chat
-- @include chat_list
if not redis.call('SET', KEYS[3], ARGV[2], 'NX', 'PX', ARGV[3]) then return {0} end
local row = load()
if not row then return {1} end
local turns, chat, records = false, false, false
local conversation = row[5]
if conversation and conversation ~= '' then
  local wanted = tonumber(ARGV[4])
  if wanted > 0 then
    turns = redis.call('LRANGE', ARGV[5] .. conversation, -wanted, -1)
  end
  local fields = chat_read(ARGV[6] .. conversation)
  if fields[1] then chat = fields end
  local listed = tonumber(ARGV[7])
  if listed > 0 then records = chat_list(ARGV[8] .. conversation, ARGV[9], listed) end
end
return {1, row[1], row[2], row[3], row[4], row[5], turns, chat, records}
