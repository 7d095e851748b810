-- dispatch: choose the schedule entries beat dispatches now and mark each queued, on Redis's clock.
--
-- One call per dispatch pass, with every schedule entry. An entry is due when its state's
-- `next_check` has passed (written by each poll, state_save.lua, for sources; by this script
-- for periodic entries) or when its definition changed since its last dispatch (`dispatch_fp`;
-- a new source has none): then `next_check` is reset to now, so the worker agrees it is due.
-- A due entry is not dispatched while paused, while its previous task is still queued (its
-- marker), while it is being polled (its lock), or while the broker queue holds the cap.
-- Check and mark are one atomic step: two beats can never both dispatch one entry.
--
-- KEYS[1]  the broker queue (Celery's LIST)
-- KEYS[2]  dispatch counters (HASH)
-- KEYS[3k], KEYS[3k+1], KEYS[3k+2]  entry k = 1..n: its state (HASH), its queued marker
--          (STRING task id), what makes it busy (the source's poll lock; the marker when none)
-- ARGV[1]  queue cap
-- ARGV[2]  marker TTL (seconds) until the caller confirms the message was sent
-- ARGV[3]  counters TTL (seconds)
-- ARGV[4]  seconds: a source whose last poll took longer may not share a task (batch)
-- ARGV[4k+1], ARGV[4k+2], ARGV[4k+3], ARGV[4k+4]  entry k: its fingerprint, its task id,
--          seconds to advance next_check by at dispatch ("" for sources: the poll sets it),
--          its state's TTL (seconds)
-- Returns  {dispatched entries' indices k, queue length, now as "seconds.micros",
--           for each dispatched entry 1 if it may share a task with others, else 0}
--
-- A source may share a task (be polled in a batch, one after another) unless its last poll
-- failed (`errors`), took longer than ARGV[4] (`last_elapsed_s`) or never finished: it was
-- dispatched (`dispatched_at`) after its last poll started (`last_poll`) — killed, timed out
-- or its message lost. Such a source gets a task of its own, so it never holds up others.

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local stamp = string.format('%.6f', now)
local length = redis.call('LLEN', KEYS[1])
local budget = tonumber(ARGV[1]) - length
local counts = {dispatched = 0, skipped_queued = 0, skipped_queue_full = 0, skipped_polling = 0}
local slow = tonumber(ARGV[4])
local chosen, shared = {}, {}
for k = 1, (#KEYS - 2) / 3 do
  local state, marker, busy = KEYS[3 * k], KEYS[3 * k + 1], KEYS[3 * k + 2]
  local fp, token, advance, ttl = ARGV[4 * k + 1], ARGV[4 * k + 2], ARGV[4 * k + 3], ARGV[4 * k + 4]
  local h = redis.call('HMGET', state, 'next_check', 'paused', 'dispatch_fp', 'errors',
    'last_elapsed_s', 'dispatched_at', 'last_poll')
  local changed = h[3] ~= fp
  if h[2] ~= '1' and (changed or (tonumber(h[1]) or 0) <= now) then
    if redis.call('EXISTS', marker) == 1 then
      counts.skipped_queued = counts.skipped_queued + 1
    elseif busy ~= marker and redis.call('EXISTS', busy) == 1 then
      counts.skipped_polling = counts.skipped_polling + 1
    elseif budget <= 0 then
      counts.skipped_queue_full = counts.skipped_queue_full + 1
    else
      budget = budget - 1
      counts.dispatched = counts.dispatched + 1
      chosen[#chosen + 1] = k
      local finished = h[6] == false or (tonumber(h[7]) or 0) >= (tonumber(h[6]) or 0)
      local fine = (tonumber(h[4]) or 0) == 0 and (tonumber(h[5]) or 0) <= slow
      shared[#shared + 1] = (advance == '' and finished and fine) and 1 or 0
      redis.call('SET', marker, token, 'EX', ARGV[2])
      local fields = {'dispatched_at', stamp, 'dispatch_fp', fp}
      if advance ~= '' then
        fields[5], fields[6] = 'next_check', string.format('%.6f', now + tonumber(advance))
      elseif changed then
        fields[5], fields[6] = 'next_check', stamp
      end
      redis.call('HSET', state, unpack(fields))
      if advance ~= '' or redis.call('TTL', state) < 0 then
        redis.call('EXPIRE', state, ttl)
      end
    end
  end
end
for name, count in pairs(counts) do
  if count > 0 then
    redis.call('HINCRBY', KEYS[2], name, count)
  end
end
redis.call('HSET', KEYS[2], 'last_pass', stamp, 'queue_length', length, 'queue_cap', ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return {chosen, length, stamp, shared}
