-- take_slot: a token of a recipient's pacing bucket.
-- KEYS
--   1   the bucket
-- ARGV
--   1   now (s)
--   2   seconds per token
--   3   burst
--   4   the bucket's TTL (ms)
-- Returns the wait in seconds as a string (0 when taken).
-- @include take_slot
return tostring(take_slot(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
  ARGV[4]))
