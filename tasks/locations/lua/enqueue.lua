-- enqueue: buffer alerts for location batching, each once, and keep the buffer at its cap.
--
-- The same hand-off the feed poll makes atomically with its write (seen_add.lua), for alerts
-- that arrive another way. An alert is buffered only if it has no marker yet, so one handed
-- over twice is buffered once. The evicted keep their marker: the caller falls them back, or,
-- if it dies first, the stale-marker expiry does. No TTLs: a capped set needs none, and a TTL
-- would drop waiting alerts during an outage.
--
-- KEYS[1]  buffer: ZSET alert id → enqueued at
-- KEYS[2]  markers: ZSET alert id → queued at (every alert not yet located)
-- KEYS[3]  payloads: HASH alert id → JSON title, summary, source, coordinates
-- ARGV[1]  buffer cap
-- ARGV[2…] pairs: alert id, payload
-- Returns  the evicted alert ids, oldest first

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
for i = 2, #ARGV, 2 do
  if redis.call('ZADD', KEYS[2], 'NX', now, ARGV[i]) == 1 then
    redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
    redis.call('ZADD', KEYS[1], now, ARGV[i])
  end
end
local n = redis.call('ZCARD', KEYS[1])
local cap = tonumber(ARGV[1])
if n <= cap then return {} end
local old = redis.call('ZRANGE', KEYS[1], 0, n - cap - 1)
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - cap - 1)
return old
