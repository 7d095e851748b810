-- host_acquire: take one of a host's request slots, no sooner than the delay after the last.
--
-- Shared by every worker through Redis, timed by Redis TIME so hosts with skewed clocks agree.
-- The slot logic is lib/host_slot.lua (also taken by claim.lua at the start of a poll).
--
-- KEYS[1]  in-flight requests: ZSET token → lease deadline (ms)
-- KEYS[2]  earliest start of the next request (ms), STRING
-- ARGV[1]  token of this request
-- ARGV[2]  slots: requests at once
-- ARGV[3]  lease (ms): longest one request may take
-- ARGV[4]  delay (ms) between request starts
-- ARGV[5]  optional: token of this caller's previous request to the host, released first
-- Returns  0 when the slot is taken, else milliseconds to wait before asking again

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[5] and ARGV[5] ~= '' then
  redis.call('ZREM', KEYS[1], ARGV[5])
end
return take_host_slot(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4]), now)
