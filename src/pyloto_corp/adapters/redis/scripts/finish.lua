-- finish: a step's end in one round trip: its save (as save.lua), under a pacing token when
-- its claim needs one, the turns its send adds, the release of its lease and the next step's
-- lease. Positions by name from scripts.FINISH (the loader puts them in; tests hold this list
-- to it).
-- KEYS
--   1   record            the record's hash
--   2   open_index        ids of non-terminal records by last update
--   3   failed_index      ids of failed records by last update
--   4   lease             the step's lease
--   5   next_lease        the next step's lease (any key when unused)
--   6   bucket            the recipient's pacing bucket (any key when unused)
--   7   turns_list        the conversation's turns (any key when unused)
--   8   updated_index     ids of every record by last update
--   9   minute_counters   the minute bucket's counters (any key when there are none)
--   10  hour_counters     the hour bucket's counters (any key when there are none)
--   11  fallback_reasons  set of every fallback reason with an index
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
--   11  conversation      its conversation (field 'c'; the resolved customer key instead
--                         when resolve is '1')
--   12  owner             owner of the step's lease
--   13  next_owner        owner of the next step's lease ('' for none)
--   14  next_lease_ms     the next lease's length (ms)
--   15  bucket_now        now for the pacing bucket (s; '' for no token)
--   16  per_token         seconds per token
--   17  burst             the bucket's burst
--   18  bucket_ttl_ms     the bucket's TTL (ms)
--   19  turns_window      the turns' TTL (s)
--   20  turns_kept        how many turns the list keeps
--   21  state_prefix      state index prefix
--   22  fallback_prefix   fallback index prefix
--   23  fallback_reason   its fallback reason ('' for none)
--   24  counters          counter names of the transition, by spaces ('' for none)
--   25  phone_key         the customer's number key ('' for none)
--   26  user_key          the customer's BSUID key ('' for none)
--   27  resolve           '1' to resolve the customer key (saved in field 'c'), else ''
--   28  conversation_prefix  conversation key prefix
--   29  alias_prefix      alias key prefix
--   30  alias_ttl         alias TTL (s)
--   31+ turns             the turns to append (JSON each), none or more
-- Returns {saved, next lease taken, wait as a string, customer key resolved or ''}. The
-- version is checked before the token is taken, so a stale claim costs none; the lease is
-- released before the next is taken, as both may have the same name (a claim made anew in
-- `sending`).
-- @include save
-- @include take_slot
-- @include customer
local saved, taken, wait, customer = 0, 0, 0, ''
local current = redis.call('HMGET', KEYS[1], 'v', 's', 'f')
if current[1] == ARGV[$argv.expected_version] then
  if ARGV[$argv.bucket_now] ~= '' then
    wait = take_slot(KEYS[$keys.bucket], tonumber(ARGV[$argv.bucket_now]),
      tonumber(ARGV[$argv.per_token]), tonumber(ARGV[$argv.burst]), ARGV[$argv.bucket_ttl_ms])
  end
  if wait == 0 then
    if ARGV[$argv.resolve] == '1' then
      customer = resolve(ARGV[$argv.conversation_prefix], ARGV[$argv.alias_prefix],
        ARGV[$argv.alias_ttl], ARGV[$argv.phone_key], ARGV[$argv.user_key])
      ARGV[$argv.conversation] = customer
    end
    save(current)
    saved = 1
  end
end
if #ARGV >= $argv.turns then
  redis.call('RPUSH', KEYS[$keys.turns_list], unpack(ARGV, $argv.turns))
  redis.call('LTRIM', KEYS[$keys.turns_list], -tonumber(ARGV[$argv.turns_kept]), -1)
  redis.call('EXPIRE', KEYS[$keys.turns_list], ARGV[$argv.turns_window])
end
if redis.call('GET', KEYS[$keys.lease]) == ARGV[$argv.owner] then
  redis.call('DEL', KEYS[$keys.lease])
end
if saved == 1 and ARGV[$argv.next_owner] ~= '' then
  if redis.call('SET', KEYS[$keys.next_lease], ARGV[$argv.next_owner], 'NX', 'PX',
      ARGV[$argv.next_lease_ms]) then
    taken = 1
  end
end
return {saved, taken, tostring(wait), customer}
