-- state_save: store a poll's outcome in the source's state, timed by Redis.
--
-- `next_check` is computed here from Redis TIME, so every worker and beat read due times on
-- one clock whatever their own clocks say.
--
-- KEYS[1]  the source's state (HASH)
-- KEYS[2]  optional: beat's due set (ZSET schedule entry → due time), given the new next_check
-- ARGV[1]  TTL of the state (seconds), refreshed on every poll
-- ARGV[2]  seconds until the source is due again; "" = leave next_check alone
-- ARGV[3]  JSON object of fields to set (strings)
-- ARGV[4]  JSON list of fields to set to now (e.g. last_error_at)
-- ARGV[5]  with KEYS[2]: the source's schedule entry (`feed:bbc`)
-- Returns  now (seconds, as a string)

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local values = cjson.decode(ARGV[3])
local flat = {}
for k, v in pairs(values) do
  flat[#flat + 1] = k
  flat[#flat + 1] = v
end
for _, k in ipairs(cjson.decode(ARGV[4])) do
  flat[#flat + 1] = k
  flat[#flat + 1] = string.format('%.6f', now)
end
if ARGV[2] ~= '' then
  flat[#flat + 1] = 'next_check'
  flat[#flat + 1] = string.format('%.6f', now + tonumber(ARGV[2]))
  if KEYS[2] then
    redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[5])
    if redis.call('TTL', KEYS[2]) < 0 then
      redis.call('EXPIRE', KEYS[2], ARGV[1])
    end
  end
end
if #flat > 0 then
  redis.call('HSET', KEYS[1], unpack(flat))
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return string.format('%.6f', now)
