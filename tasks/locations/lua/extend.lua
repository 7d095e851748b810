-- extend: give a batch that will be retried a new member list and a later lease deadline.
--
-- KEYS[1]  leases: ZSET batch id → deadline (seconds, Redis time)
-- KEYS[2]  batches: HASH batch id → JSON alert ids
-- ARGV[1]  batch id
-- ARGV[2]  seconds from now until the lease expires
-- ARGV[3]  JSON alert ids still to locate
-- Returns  1 if the batch still held its lease, else 0 (it was reaped; leave it)

if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], 'XX', tonumber(t[1]) + tonumber(ARGV[2]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 1
