-- move: a customer's key moves from one to another (their turns and conversation follow,
-- the old one becomes an alias of the new).
-- KEYS: none.
-- ARGV
--   1   conversation key prefix
--   2   alias key prefix
--   3   alias TTL (s)
--   4   the previous key
--   5   the current key
--   6   conversation hash key prefix
--   7   conversation audit trail key prefix
--   8   conversation mode index prefix
--   9   the index of all conversations
-- Returns 1 when moved, 0 when both keys are the same.
-- @include customer
-- @include chat
local previous, current = ARGV[4], ARGV[5]
if previous == current then return 0 end
if follow(ARGV[2], current) == previous then redis.call('DEL', ARGV[2] .. current) end
move_turns(ARGV[1], previous, current)
chat_move({hash = ARGV[6], audit = ARGV[7], modes = ARGV[8], all = ARGV[9]}, previous, current)
redis.call('SET', ARGV[2] .. previous, current, 'EX', ARGV[3])
return 1
