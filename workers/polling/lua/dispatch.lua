-- dispatch: choose the schedule entries beat dispatches now and mark each queued, on Redis's clock.
--
-- One call per chunk of a dispatch pass (at most WATCHKEEPER_DISPATCH_CHUNK entries: never one
-- long call), with the entries to decide: all of them in a full pass, else those the due set
-- (KEYS[3], due.lua) says are due. An entry is due when its state's
-- `next_check` has passed (written by each poll, state_save.lua, for sources; by this script
-- for periodic entries) or when its definition changed since its last dispatch (`dispatch_fp`;
-- a new source has none): then `next_check` is reset to now, so the worker agrees it is due.
-- A due entry is not dispatched while paused, while its previous task is still queued (its
-- marker), while it is being polled (its lock), or while the broker queue holds the cap.
-- Check and mark are one atomic step: two beats can never both dispatch one entry.
--
-- "Check now" (the dashboard) is a pass of one entry in `check` mode: due or not, paused or
-- not, but never while its task is queued, its source polled, or the queue at its cap; it
-- marks the entry queued like any dispatch (so clicks and beat send nothing more until the poll
-- starts), writes no pass counters (it is not a beat pass) and only moves an entry already in
-- the due set (it never creates the set, whose absence tells beat that Redis lost it). Its task
-- ids start with "check-": on a paused source only such a marker holds a check back, as a
-- scheduled poll queued before the pause will skip the source.
--
-- Fenced by the dispatch lock (ARGV[6]): the pass marks nothing unless the lock in KEYS[4]
-- still names this beat, checked on the server the pass runs on. So a beat that took or
-- refreshed the lock on a primary that has since failed over dispatches nothing on the new
-- one unless the new primary has its lock too (its takeover was confirmed by a replica).
--
-- The due set holds each entry's next due time. A full pass rebuilds it from every entry's
-- state (dropping removed entries); any pass moves a dispatched entry to when it is due next
-- (a periodic entry: its next period; a source: when its marker, and its message, expire — its
-- poll sets the real time, state_save.lua), and an entry skipped because its task is queued or
-- its source being polled to when that marker or lock expires. Other skipped entries stay due.
--
-- KEYS[1]  the broker queue (Celery's LIST)
-- KEYS[2]  dispatch counters (HASH)
-- KEYS[3]  the due set (ZSET entry name → due time)
-- KEYS[4]  the dispatch lock (STRING holder id)
-- KEYS[3k+2], KEYS[3k+3], KEYS[3k+4]  entry k = 1..n: its state (HASH), its queued marker
--          (STRING task id), what makes it busy (the source's poll lock; the marker when none)
-- ARGV[1]  queue cap
-- ARGV[2]  marker TTL (seconds) until the caller confirms the message was sent
-- ARGV[3]  counters and due set TTL (seconds)
-- ARGV[4]  seconds: a source whose last poll took longer may not share a task (batch)
-- ARGV[5]  "1": a full pass (the entries are all there are, or the first chunk of them: the
--          due set is emptied first); "sweep": a further chunk of a full pass, or a slice of
--          the sweep beat spreads over its passes (every entry's due time written, nothing
--          emptied); "0": a pass over what is due; "check": "check now" of the one entry given
-- ARGV[6]  this beat's id: nothing is dispatched unless KEYS[4] holds it ("": no fence)
-- ARGV[6k+1..6k+6]  entry k: its fingerprint, its task id, seconds to advance next_check by at
--          dispatch ("" for sources: the poll sets it), its state's TTL (seconds), its name,
--          seconds its marker lives once sent
-- Returns  {dispatched entries' indices k, queue length, now as "seconds.micros",
--           for each dispatched entry 1 if it may share a task with others, else 0,
--           the skips of this pass as {reason, count, ...},
--           1 if the pass was fenced off (the lock is not this beat's) else 0}
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
local slow = tonumber(ARGV[4])
local full = ARGV[5] == '1' or ARGV[5] == 'sweep'
local check = ARGV[5] == 'check'
local due_set = KEYS[3]
if ARGV[6] ~= '' and redis.call('GET', KEYS[4]) ~= ARGV[6] then
  return {{}, length, stamp, {}, {}, 1}
end
if ARGV[5] == '1' then
  redis.call('UNLINK', due_set)  -- freed in the background: a million members take no pause
end
local counts = {dispatched = 0, skipped_queued = 0, skipped_queue_full = 0, skipped_polling = 0}
local chosen, shared = {}, {}
for k = 1, (#KEYS - 4) / 3 do
  local state, marker, busy = KEYS[3 * k + 2], KEYS[3 * k + 3], KEYS[3 * k + 4]
  local fp, token = ARGV[6 * k + 1], ARGV[6 * k + 2]
  local advance, ttl = ARGV[6 * k + 3], ARGV[6 * k + 4]
  local name, wait = ARGV[6 * k + 5], tonumber(ARGV[6 * k + 6])
  local h = redis.call('HMGET', state, 'next_check', 'paused', 'dispatch_fp', 'errors',
    'last_elapsed_s', 'dispatched_at', 'last_poll')
  local changed = h[3] ~= fp
  local next_check = tonumber(h[1]) or 0
  local due_at = changed and 0 or next_check
  local moved = false
  if check or (h[2] ~= '1' and (changed or next_check <= now)) then
    local queued_ms = redis.call('PTTL', marker)
    if check and queued_ms ~= -2 and h[2] == '1'
        and string.sub(redis.call('GET', marker) or '', 1, 6) ~= 'check-' then
      queued_ms = -2  -- a scheduled poll of a paused source: it will skip, so it does not count
    end
    local busy_ms = busy ~= marker and redis.call('PTTL', busy) or -2
    if queued_ms ~= -2 then
      counts.skipped_queued = counts.skipped_queued + 1
      if queued_ms > 0 then  -- not worth reading again before its marker expires
        due_at, moved = now + queued_ms / 1000, true
      end
    elseif busy_ms ~= -2 then
      counts.skipped_polling = counts.skipped_polling + 1
      if busy_ms > 0 then  -- its poll will set its due time; else its lock expires
        due_at, moved = now + busy_ms / 1000, true
      end
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
        due_at = now + tonumber(advance)
        fields[5], fields[6] = 'next_check', string.format('%.6f', due_at)
      else
        due_at = now + wait
        if changed then
          fields[5], fields[6] = 'next_check', stamp
        end
      end
      redis.call('HSET', state, unpack(fields))
      if advance ~= '' or redis.call('TTL', state) < 0 then
        redis.call('EXPIRE', state, ttl)
      end
      moved = true
    end
  end
  if check then
    if moved then
      redis.call('ZADD', due_set, 'XX', due_at, name)
    end
  elseif full or moved then
    redis.call('ZADD', due_set, due_at, name)
  end
end
local skips = {}
for name, count in pairs(counts) do
  if count > 0 and name ~= 'dispatched' then
    skips[#skips + 1] = name
    skips[#skips + 1] = count
  end
end
if not check then
  for name, count in pairs(counts) do
    if count > 0 then
      redis.call('HINCRBY', KEYS[2], name, count)
    end
  end
  redis.call('HSET', KEYS[2], 'last_pass', stamp, 'queue_length', length, 'queue_cap', ARGV[1])
  redis.call('EXPIRE', KEYS[2], ARGV[3])
  redis.call('EXPIRE', due_set, ARGV[3])
end
return {chosen, length, stamp, shared, skips, 0}
