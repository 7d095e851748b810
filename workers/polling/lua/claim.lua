-- claim: try a source's poll lock, read its state and take its host's request slot, on Redis's
-- clock.
--
-- One round trip at the start of every poll. The time returned is the poll's start: due
-- checks, the seen-set's protection of this poll's keys and `last_poll` all use it, so a worker
-- with a skewed clock neither stalls nor rushes a source. The host slot (lib/host_slot.lua) is
-- taken only when the lock is and the poll will fetch (a scheduled poll of a paused or not-due
-- source is skipped and must not use up the host's delay); it is held under the poll's token.
-- A scheduled poll also clears the source's "queued" marker (if it is still this task's) in the
-- same step, so at every moment beat sees either the marker or the lock and never dispatches
-- the source a second time.
--
-- KEYS[1]      the source's lock (STRING token)
-- KEYS[2]      the source's state (HASH)
-- KEYS[3]      optional, with KEYS[4]: the host's in-flight requests (ZSET token → deadline, ms)
-- KEYS[4]      optional: the host's earliest next request (ms, STRING)
-- KEYS[#KEYS]  optional, when ARGV[7] is set: the source's queued marker (STRING task id)
-- ARGV[1]  this poll's token
-- ARGV[2]  lock expiry (ms): the task's hard time limit
-- ARGV[3]  "1": a scheduled poll (no host slot for a paused or not-due source)
-- ARGV[4]  host slots: requests at once ("" without host keys)
-- ARGV[5]  host slot lease (ms)
-- ARGV[6]  delay (ms) between request starts to the host
-- ARGV[7]  this task's id, whose queued marker is cleared ("" = none)
-- Returns  {1 if locked else 0, now as "seconds.micros", state as [field, value, ...],
--           host slot: -1 not tried, 0 taken, else ms to wait before asking again}

local t = redis.call('TIME')
local locked = 0
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  locked = 1
end
local marker = ARGV[7] ~= nil and ARGV[7] ~= ''
if marker and redis.call('GET', KEYS[#KEYS]) == ARGV[7] then
  redis.call('DEL', KEYS[#KEYS])
end
local host = -1
local host_keys = #KEYS - (marker and 1 or 0) >= 4
if locked == 1 and host_keys then
  local wanted = true
  if ARGV[3] == '1' then
    local now_s = tonumber(t[1]) + tonumber(t[2]) / 1000000
    local next_check = tonumber(redis.call('HGET', KEYS[2], 'next_check') or '0') or 0
    wanted = redis.call('HGET', KEYS[2], 'paused') ~= '1' and now_s >= next_check
  end
  if wanted then
    local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    host = take_host_slot(KEYS[3], KEYS[4], ARGV[1], tonumber(ARGV[4]), tonumber(ARGV[5]),
      tonumber(ARGV[6]), now_ms)
  end
end
local now = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
return {locked, now, redis.call('HGETALL', KEYS[2]), host}
