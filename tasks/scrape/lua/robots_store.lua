-- robots_store: cache one origin's robots.txt and keep the index of cached origins capped.
--
-- KEYS[1]  index: ZSET origin → fetched at (seconds, Redis TIME)
-- KEYS[2]  this origin's robots.txt text (STRING)
-- ARGV[1]  origin
-- ARGV[2]  robots.txt text
-- ARGV[3]  TTL (seconds)
-- ARGV[4]  cap: origins kept in the index
-- Returns  origins evicted from the index (oldest first); the caller deletes their texts
--          (which also expire by their TTL)

local t = redis.call('TIME')
local now = tonumber(t[1])
local ttl = tonumber(ARGV[3])
local cap = tonumber(ARGV[4])
redis.call('SET', KEYS[2], ARGV[2], 'EX', ttl)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - ttl))
local evicted = {}
local n = redis.call('ZCARD', KEYS[1])
if n > cap then
  evicted = redis.call('ZRANGE', KEYS[1], 0, n - cap - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - cap - 1)
end
redis.call('EXPIRE', KEYS[1], ttl)
return evicted
