-- move: a customer's key moves from one to another (their turns follow, the old one becomes
-- an alias of the new).
-- KEYS: none.
-- ARGV
--   1   conversation key prefix
--   2   alias key prefix
--   3   alias TTL (s)
--   4   the previous key
--   5   the current key
-- Returns 1 when moved, 0 when both keys are the same.
-- @include customer
local previous, current = ARGV[4], ARGV[5]
if previous == current then return 0 end
if follow(ARGV[2], current) == previous then redis.call('DEL', ARGV[2] .. current) end
move_turns(ARGV[1], previous, current)
redis.call('SET', ARGV[2] .. previous, current, 'EX', ARGV[3])
return 1
