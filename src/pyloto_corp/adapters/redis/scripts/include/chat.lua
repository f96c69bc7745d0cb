-- Customers' conversations (domain/conversation.py), shared by finish.lua, change.lua,
-- chat_get.lua and lease_get.lua. A conversation is a hash of CHAT_FIELDS (strings; floats
-- as Python's repr), its audit trail a list of JSON entries, and its key is in the index of
-- its mode and the index of all, scored by `since` (see RedisKeys.chat and the keys after it).
-- chat_read() is its fields (the first false when there is none); chat_write_at(first) is
-- the write of scripts.CHAT_WRITE laid out from ARGV[first] on; chat_allows() whether a
-- conversation is in the mode a write expects ('' for any; a missing one is in 'bot') and
-- has the newest message it expects ('' for any);
-- chat_apply() is domain.conversation.apply_write, the one rule, in Lua: false (nothing
-- written) when the mode is not the one expected, else the write is applied, the indexes
-- follow a mode change, and the hash and trail expire `where.ttl` seconds from now.
-- `where`: {hash = hash key prefix, audit = trail key prefix, modes = mode index prefix,
-- all = the index of all, ttl = TTL (s)}. AUDIT_KEPT is put in by the loader.
local CHAT_FIELDS = {'mode', 'since', 'reason', 'owner', 'customer_at', 'last_message',
  'agent_at', 'version'}
local AUDIT_KEPT = $AUDIT_KEPT
local function chat_read(hash)
  return redis.call('HMGET', hash, unpack(CHAT_FIELDS))
end
local function chat_write_at(first)
  return {customer_at = ARGV[first], message_id = ARGV[first + 1], expect = ARGV[first + 2],
    mode = ARGV[first + 3], reason = ARGV[first + 4], owner = ARGV[first + 5],
    at = ARGV[first + 6], agent = ARGV[first + 7], audit = ARGV[first + 8],
    newest = ARGV[first + 9]}
end
local function chat_allows(hash, expect, newest)
  if expect == '' and newest == '' then return true end
  local row = redis.call('HMGET', hash, 'mode', 'last_message')
  if expect ~= '' and (row[1] or 'bot') ~= expect then return false end
  local last = row[2] or ''
  return newest == '' or last == '' or last == newest
end
local function chat_apply(where, key, w)
  local hash = where.hash .. key
  local row = chat_read(hash)
  local mode, since = row[1] or 'bot', row[2] or '0.0'
  if w.expect ~= '' and mode ~= w.expect then return false end
  if w.newest ~= '' and (row[6] or '') ~= '' and row[6] ~= w.newest then return false end
  local set = {}
  if not row[1] then
    set = {'mode', 'bot', 'since', '0.0', 'reason', '', 'owner', '', 'customer_at', '0.0',
      'last_message', '', 'agent_at', '0.0', 'version', '0'}
  end
  local function put(field, value)
    set[#set + 1] = field
    set[#set + 1] = value
  end
  if w.customer_at ~= '' then
    if tonumber(w.customer_at) >= tonumber(row[5] or '0') then put('customer_at', w.customer_at) end
    if w.message_id ~= '' then put('last_message', w.message_id) end
  end
  if w.mode ~= '' then
    put('mode', w.mode)
    put('since', w.at)
    put('reason', w.reason)
    put('owner', w.owner)
    put('version', tostring((tonumber(row[8]) or 0) + 1))
  end
  if w.agent == '1' then put('agent_at', w.at) end
  if #set > 0 then redis.call('HSET', hash, unpack(set)) end
  redis.call('EXPIRE', hash, where.ttl)
  local trail = where.audit .. key
  if w.audit ~= '' then
    redis.call('RPUSH', trail, w.audit)
    redis.call('LTRIM', trail, -AUDIT_KEPT, -1)
  end
  redis.call('EXPIRE', trail, where.ttl)
  if not row[1] or w.mode ~= '' then
    local now_mode, score = mode, since
    if w.mode ~= '' then now_mode, score = w.mode, w.at end
    if row[1] and now_mode ~= mode then redis.call('ZREM', where.modes .. mode, key) end
    redis.call('ZADD', where.modes .. now_mode, score, key)
    redis.call('ZADD', where.all, score, key)
  end
  return true
end
-- chat_move() gives the conversation of `source` (its hash, trail and index entries) to
-- `target` unless that one has its own: a customer whose key changed keeps their mode.
local function chat_move(where, source, target)
  local from, to = where.hash .. source, where.hash .. target
  if source == target or redis.call('EXISTS', from) == 0 or redis.call('EXISTS', to) == 1 then
    return
  end
  local row = redis.call('HMGET', from, 'mode', 'since')
  local mode, since = row[1] or 'bot', row[2] or '0.0'
  redis.call('RENAME', from, to)
  if redis.call('EXISTS', where.audit .. source) == 1 then
    redis.call('DEL', where.audit .. target)
    redis.call('RENAME', where.audit .. source, where.audit .. target)
  end
  redis.call('ZREM', where.modes .. mode, source)
  redis.call('ZADD', where.modes .. mode, since, target)
  redis.call('ZREM', where.all, source)
  redis.call('ZADD', where.all, since, target)
end
