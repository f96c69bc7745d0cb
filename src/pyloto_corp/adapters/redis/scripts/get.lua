-- get: one record with its best delivery status.
-- KEYS
--   1   the record's hash
--   2   its delivery ref (the outbound id a status's callback data named)
-- ARGV
--   1   delivery key prefix
-- Returns load()'s row (see include/load.lua), nil when there is no record.
-- @include load
return load()
