-- claim: try a source's poll lock and read its state, on Redis's clock.
--
-- One round trip at the start of every poll. The time returned is the poll's start: due
-- checks, the seen-set's protection of this poll's keys and `last_poll` all use it, so a worker
-- with a skewed clock neither stalls nor rushes a source. A scheduled poll also clears the
-- source's "queued" marker (if it is still this task's) in the same step, so at every moment
-- beat sees either the marker or the lock and never dispatches the source a second time.
--
-- KEYS[1]  the source's lock (STRING token)
-- KEYS[2]  the source's state (HASH)
-- KEYS[3]  optional: the source's queued marker (STRING task id)
-- ARGV[1]  this poll's token
-- ARGV[2]  lock expiry (ms): the task's hard time limit
-- ARGV[3]  with KEYS[3]: this task's id
-- Returns  {1 if locked else 0, now as "seconds.micros", state as [field, value, ...]}

local t = redis.call('TIME')
local locked = 0
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  locked = 1
end
if KEYS[3] and redis.call('GET', KEYS[3]) == ARGV[3] then
  redis.call('DEL', KEYS[3])
end
return {locked, t[1] .. '.' .. string.format('%06d', tonumber(t[2])), redis.call('HGETALL', KEYS[2])}
