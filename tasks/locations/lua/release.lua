-- release: a batch is done (located or fallen back); drop its lease and count its outcome once.
--
-- The outcome is counted only by the call that removed the batch, so a call repeated after a
-- lost reply never counts a batch twice.
--
-- KEYS[1]  leases: ZSET batch id → deadline
-- KEYS[2]  batches: HASH batch id → JSON alert ids
-- KEYS[3]  retry counters: HASH batch id → attempts
-- KEYS[4]  counters: HASH
-- ARGV[1]  batch id
-- ARGV[2]  counter to add one to ("" none)
-- Returns  1 if this call released the batch, else 0

local released = redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
if released == 1 and ARGV[2] ~= '' then
  redis.call('HINCRBY', KEYS[4], ARGV[2], 1)
end
return released
