-- reap: return the unlocated alerts of expired leases to the buffer, then keep it at its cap.
--
-- KEYS[1]  leases: ZSET batch id → deadline (seconds, Redis time)
-- KEYS[2]  buffer: ZSET alert id → enqueued at
-- KEYS[3]  markers: ZSET alert id → queued at
-- KEYS[4]  retry counters: HASH batch id → attempts
-- KEYS[5]  batches: HASH batch id → JSON alert ids
-- ARGV[1]  most leases reaped per call
-- ARGV[2]  buffer cap
-- Returns  {batches reaped, alerts returned, evicted alert ids...}

local t = redis.call('TIME')
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', t[1], 'LIMIT', 0, ARGV[1])
local returned = 0
for _, b in ipairs(expired) do
  local raw = redis.call('HGET', KEYS[5], b)
  if raw then
    for _, id in ipairs(cjson.decode(raw)) do
      local q = redis.call('ZSCORE', KEYS[3], id)
      if q then
        redis.call('ZADD', KEYS[2], q, id)
        returned = returned + 1
      end
    end
  end
  redis.call('HDEL', KEYS[5], b)
  redis.call('ZREM', KEYS[1], b)
  redis.call('HDEL', KEYS[4], b)
end
local out = {#expired, returned}
local n = redis.call('ZCARD', KEYS[2])
local cap = tonumber(ARGV[2])
if n > cap then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, n - cap - 1)) do
    out[#out + 1] = id
  end
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, n - cap - 1)
end
return out
