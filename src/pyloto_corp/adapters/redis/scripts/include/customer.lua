-- Customer keys (see CustomerKeys), shared by move.lua and finish.lua.
-- follow() is the customer key `key` stands for through its aliases (`aliases` .. key), at
-- most ALIAS_HOPS of them (redis.scripts.ALIAS_HOPS, put in by the loader); move_turns()
-- renames the turns of one key to another unless that one has its own (RENAME keeps the
-- list's expiry); resolve() is the key an accept's save resolves ('' for a key not given,
-- see ports.CustomerKeys). Keys are computed from prefixes, as the store expects a single-shard Redis (see redis.keys).
local function follow(aliases, key)
  for _ = 1, $ALIAS_HOPS do
    local next = redis.call('GET', aliases .. key)
    if not next or next == key then return key end
    key = next
  end
  return key
end
local function move_turns(conversations, source, target)
  local from, to = conversations .. source, conversations .. target
  if redis.call('EXISTS', from) == 1 and redis.call('EXISTS', to) == 0 then
    redis.call('RENAME', from, to)
  end
end
local function resolve(conversations, aliases, ttl, phone, user)
  if user == '' then
    if phone == '' then return '' end
    return follow(aliases, phone)
  end
  local customer = follow(aliases, user)
  if phone ~= '' and phone ~= customer then
    move_turns(conversations, phone, customer)
    redis.call('SET', aliases .. phone, customer, 'EX', ttl)
  end
  return customer
end
