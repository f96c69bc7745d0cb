-- release: a lease given back by its owner.
-- KEYS
--   1   the lease
-- ARGV
--   1   its owner
-- Returns 1 when released, 0 when another holds it (or nobody).
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
