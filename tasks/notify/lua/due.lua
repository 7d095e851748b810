-- due: the messages a destination owes now, oldest due first, with their records.
--
-- KEYS[1]  the destination's due set (ZSET key -> next attempt)
-- KEYS[2]  the sink's outbox (HASH)
-- ARGV[1]  how many
-- Returns  {now, key1, record1 (or false), key2, record2, ...}

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local out = {tostring(now)}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, key in ipairs(due) do
  out[#out + 1] = key
  out[#out + 1] = redis.call('HGET', KEYS[2], key)
end
return out
