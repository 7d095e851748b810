-- claim: move the oldest buffered alerts into a new leased batch, so no two workers share one.
--
-- Idempotent per batch id: a call repeated after a lost reply (redis-py retries on timeouts)
-- returns the batch already claimed instead of claiming a second one. The lease deadline is
-- Redis time, so a worker with a skewed clock cannot make leases expire early or late.
--
-- KEYS[1]  buffer: ZSET alert id → enqueued at
-- KEYS[2]  leases: ZSET batch id → deadline (seconds)
-- KEYS[3]  batches: HASH batch id → JSON alert ids
-- ARGV[1]  batch size
-- ARGV[2]  lease (seconds)
-- ARGV[3]  batch id (chosen by the caller)
-- Returns  the batch's alert ids (empty: nothing waiting, no batch made)

local existing = redis.call('HGET', KEYS[3], ARGV[3])
if existing then
  return cjson.decode(existing)
end
local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #ids == 0 then return ids end
local t = redis.call('TIME')
redis.call('ZREM', KEYS[1], unpack(ids))
redis.call('ZADD', KEYS[2], tonumber(t[1]) + tonumber(ARGV[2]), ARGV[3])
redis.call('HSET', KEYS[3], ARGV[3], cjson.encode(ids))
return ids
