-- save: a version-checked save of one record, with the console's indexes and counters.
-- Positions by name from scripts.SAVE (the loader puts them in; tests hold this list to it).
-- KEYS
--   1   record            the record's hash
--   2   open_index        ids of non-terminal records by last update
--   3   failed_index      ids of failed records by last update
--   4   updated_index     ids of every record by last update
--   5   minute_counters   the minute bucket's counters (any key when there are none)
--   6   hour_counters     the hour bucket's counters (any key when there are none)
--   7   fallback_reasons  set of every fallback reason with an index
--   8   day_counters      the day bucket's cost counters (any key when there are none)
-- ARGV
--   1   expected_version  the version the stored record must have
--   2   version           the record's new version
--   3   state             its state
--   4   outbound_id       its outbound message id ('' for none)
--   5   data              its JSON
--   6   updated_at        its last update (the indexes' score)
--   7   terminal          '1' when the state is terminal, else '0'
--   8   message_id        its id (the indexes' member)
--   9   failed            '1' when the state is the failed one, else '0'
--   10  instance          this instance's id (field 'q')
--   11  conversation      its conversation (field 'c')
--   12  created_at        its creation (the score in its conversation's records)
--   13  records_prefix    conversation records index prefix
--   14  record_ttl        the records' TTL (s)
--   15  state_prefix      state index prefix
--   16  fallback_prefix   fallback index prefix
--   17  fallback_reason   its fallback reason ('' for none)
--   18  counters          counter names of the transition, by spaces ('' for none)
--   19  amounts           cost counters of the transition, "name n" by spaces ('' for none)
-- Returns 1 when saved, 0 when the stored version is another (nothing changes).
-- @include save
local current = redis.call('HMGET', KEYS[1], 'v', 's', 'f', 'c')
if current[1] ~= ARGV[$argv.expected_version] then return 0 end
save(current)
return 1
