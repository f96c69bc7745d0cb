-- take_slot(): a token bucket at `key`, {tokens, at}; returns the wait in seconds (0 when
-- a token was taken). Used by finish.lua, with the save of a send claim.
local function take_slot(key, now, per, burst, ttl)
  local b = redis.call('HMGET', key, 't', 'a')
  local tokens, at = burst, now
  if b[1] then tokens, at = tonumber(b[1]), tonumber(b[2]) end
  if now > at then
    tokens = math.min(burst, tokens + (now - at) / per)
    at = now
  end
  local wait = 0
  if tokens >= 1 then
    tokens = tokens - 1
  else
    wait = (1 - tokens) * per
  end
  redis.call('HSET', key, 't', tostring(tokens), 'a', tostring(at))
  redis.call('PEXPIRE', key, ttl)
  return wait
end
