-- host_acquire: take one of a host's request slots, no sooner than the delay after the last.
--
-- Shared by every worker through Redis, timed by Redis TIME so hosts with skewed clocks agree.
--
-- KEYS[1]  in-flight requests: ZSET token → lease deadline (ms)
-- KEYS[2]  earliest start of the next request (ms), STRING
-- ARGV[1]  token of this request
-- ARGV[2]  slots: requests at once
-- ARGV[3]  lease (ms): longest one request may take
-- ARGV[4]  delay (ms) between request starts
-- Returns  0 when the slot is taken, else milliseconds to wait before asking again

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit, lease, delay = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local nxt = tonumber(redis.call('GET', KEYS[2]) or '0')
if nxt > now then
  return nxt - now
end
if redis.call('ZCARD', KEYS[1]) >= limit then
  return 25
end
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
redis.call('PEXPIRE', KEYS[1], lease)
if delay > 0 then
  redis.call('SET', KEYS[2], now + delay, 'PX', delay)
end
return 0
