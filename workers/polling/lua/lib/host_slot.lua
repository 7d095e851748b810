-- host_slot (library, included by host_acquire.lua and claim.lua): take one of a host's request
-- slots, no sooner than the delay after the last request to it from any worker.
--
-- take_host_slot(slots, next_key, token, limit, lease, delay, now)
--   slots     in-flight requests: ZSET token -> lease deadline (ms)
--   next_key  earliest start of the next request (ms), STRING
--   token     this request's token
--   limit     requests at once; lease: longest one request may take (ms); delay: between
--             request starts (ms); now: Redis TIME in ms
-- Returns 0 when the slot is taken, else milliseconds to wait before asking again.

local function take_host_slot(slots, next_key, token, limit, lease, delay, now)
  redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
  local nxt = tonumber(redis.call('GET', next_key) or '0')
  if nxt > now then
    return nxt - now
  end
  if redis.call('ZCARD', slots) >= limit then
    return 25
  end
  redis.call('ZADD', slots, now + lease, token)
  redis.call('PEXPIRE', slots, lease)
  if delay > 0 then
    redis.call('SET', next_key, now + delay, 'PX', delay)
  end
  return 0
end
