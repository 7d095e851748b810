-- due: the schedule entries due now, on Redis's clock (what a dispatch pass then decides).
--
-- KEYS[1]  the due set (ZSET entry name → due time), kept by dispatch.lua and state_save.lua
-- ARGV[1]  most names to return (the earliest due first): a pass reads the due set in chunks
-- Returns  {1 if the due set exists else 0, names of the entries whose due time has passed
--           (at most ARGV[1]), now as "seconds.micros", the earliest due time still ahead
--           ("" when none)}; a missing set (Redis lost its data, or nothing was dispatched for
--           its TTL) calls for a full pass
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local stamp = string.format('%.6f', now)
local exists = redis.call('EXISTS', KEYS[1])
local names = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', stamp, 'LIMIT', 0, tonumber(ARGV[1]))
local ahead = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. stamp, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
return {exists, names, stamp, ahead[2] or ''}
