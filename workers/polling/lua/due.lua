-- due: the schedule entries due now, on Redis's clock (what a dispatch pass then decides).
--
-- KEYS[1]  the due set (ZSET entry name → due time), kept by dispatch.lua and state_save.lua
-- Returns  {1 if the due set exists else 0, names of the entries whose due time has passed};
--          a missing set (Redis lost its data, or nothing was dispatched for its TTL) calls
--          for a full pass
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local exists = redis.call('EXISTS', KEYS[1])
return {exists, redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%.6f', now))}
