-- finish: a step's end in one round trip: its save (as save.lua), under its conversation's
-- mode when its write expects one and under a pacing token when its claim needs one, the
-- write to its conversation, the turns its send adds, the release of its lease and the next
-- step's lease. Positions by name from scripts.FINISH (the loader puts them in; tests hold
-- this list to it).
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
--   12  day_counters      the day bucket's cost counters (any key when there are none)
--   13  chats             the index of all conversations
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
--   12  created_at        its creation (the score in its conversation's records)
--   13  records_prefix    conversation records index prefix
--   14  record_ttl        the records' TTL (s), and the conversation's
--   15  owner             owner of the step's lease
--   16  next_owner        owner of the next step's lease ('' for none)
--   17  next_lease_ms     the next lease's length (ms)
--   18  bucket_now        now for the pacing bucket (s; '' for no token)
--   19  per_token         seconds per token
--   20  burst             the bucket's burst
--   21  bucket_ttl_ms     the bucket's TTL (ms)
--   22  turns_window      the turns' TTL (s)
--   23  turns_kept        how many turns the list keeps
--   24  state_prefix      state index prefix
--   25  fallback_prefix   fallback index prefix
--   26  fallback_reason   its fallback reason ('' for none)
--   27  counters          counter names of the transition, by spaces ('' for none)
--   28  amounts           cost counters of the transition, "name n" by spaces ('' for none)
--   29  phone_key         the customer's number key ('' for none)
--   30  user_key          the customer's BSUID key ('' for none)
--   31  resolve           '1' to resolve the customer key (saved in field 'c'), else ''
--   32  conversation_prefix  conversation key prefix
--   33  alias_prefix      alias key prefix
--   34  alias_ttl         alias TTL (s)
--   35  chat              '1' when the step writes its conversation, else ''
--   36  chat_key          the conversation written ('' for the customer key resolved)
--   37  chat_customer_at  the write (scripts.CHAT_WRITE, see include/chat.lua): Meta's
--                         timestamp of the customer's message ('' for none)
--   38  chat_message_id   that message's record
--   39  chat_expect_mode  the mode the save needs the conversation in ('' for any)
--   40  chat_mode         the mode it moves to ('' for none)
--   41  chat_reason       why
--   42  chat_owner        the agent who owns it then
--   43  chat_at           when
--   44  chat_agent        '1' when an agent acted, else ''
--   45  chat_audit        the audit entry (JSON; '' for none)
--   46  chat_expect_newest  the newest message the save needs it to have ('' for any)
--   47  chat_prefix       conversation hash prefix
--   48  chat_audit_prefix  audit trail prefix
--   49  chat_mode_prefix  mode index prefix
--   50+ turns             the turns to append (JSON each), none or more
-- Returns {saved, next lease taken, wait as a string, customer key resolved or '', 1 when
-- the conversation was not in the mode expected else 0}. The version is checked first, then
-- the conversation's mode (on the key given, or the one the customer's keys resolve to,
-- read without resolving them), then the token is taken: a stale or refused save costs
-- none, and a refused one resolves nothing; the lease is released before the next is taken,
-- as both may have the same name (a claim made anew in `sending`).
-- @include save
-- @include take_slot
-- @include customer
-- @include chat
local saved, taken, wait, customer, mode_changed = 0, 0, 0, '', 0
local current = redis.call('HMGET', KEYS[1], 'v', 's', 'f', 'c')
if current[1] == ARGV[$argv.expected_version] then
  local chatting = ARGV[$argv.chat] == '1'
  if chatting then
    local key = ARGV[$argv.chat_key]
    if key == '' and ARGV[$argv.resolve] == '1' then
      local user, phone = ARGV[$argv.user_key], ARGV[$argv.phone_key]
      if user ~= '' then
        key = follow(ARGV[$argv.alias_prefix], user)
      elseif phone ~= '' then
        key = follow(ARGV[$argv.alias_prefix], phone)
      end
    end
    local expect = ARGV[$argv.chat_expect_mode]
    local newest = ARGV[$argv.chat_expect_newest]
    if key ~= '' and not chat_allows(ARGV[$argv.chat_prefix] .. key, expect, newest) then
      mode_changed = 1
    elseif key == '' and expect ~= '' and expect ~= 'bot' then
      mode_changed = 1
    end
  end
  if mode_changed == 0 and ARGV[$argv.bucket_now] ~= '' then
    wait = take_slot(KEYS[$keys.bucket], tonumber(ARGV[$argv.bucket_now]),
      tonumber(ARGV[$argv.per_token]), tonumber(ARGV[$argv.burst]), ARGV[$argv.bucket_ttl_ms])
  end
  if mode_changed == 0 and wait == 0 then
    local where = {hash = ARGV[$argv.chat_prefix], audit = ARGV[$argv.chat_audit_prefix],
      modes = ARGV[$argv.chat_mode_prefix], all = KEYS[$keys.chats],
      ttl = ARGV[$argv.record_ttl]}
    if ARGV[$argv.resolve] == '1' then
      customer = resolve(ARGV[$argv.conversation_prefix], ARGV[$argv.alias_prefix],
        ARGV[$argv.alias_ttl], ARGV[$argv.phone_key], ARGV[$argv.user_key])
      ARGV[$argv.conversation] = customer
      -- A number that becomes the BSUID's alias hands its conversation over with its turns.
      if ARGV[$argv.user_key] ~= '' and ARGV[$argv.phone_key] ~= '' then
        chat_move(where, ARGV[$argv.phone_key], customer)
      end
    end
    save(current)
    saved = 1
    local key = ARGV[$argv.chat_key]
    if key == '' then key = customer end
    if chatting and key ~= '' then
      chat_apply(where, key, chat_write_at($argv.chat_customer_at))
    end
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
return {saved, taken, tostring(wait), customer, mode_changed}
