-- billable: count one billable outbound message in its day's cost counters, once.
-- KEYS
--   1   the message's billed marker (RedisKeys.billed)
--   2   the day bucket's counters (RedisKeys.counters of DAY)
-- ARGV
--   1   the counter name (b:{category})
--   2   the marker's TTL (s): the records' retention
--   3   the day bucket's TTL (s)
-- Returns 1 when counted, 0 when the message was counted before (its statuses repeat it).
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
