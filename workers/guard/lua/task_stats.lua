-- task_stats: merge one process's per-task memory figures into the task's statistics.
--
-- KEYS[1]  the task's statistics (HASH)
-- ARGV[1]  TTL (seconds)
-- ARGV[2]  runs to add
-- ARGV[3]  sum of memory deltas to add (MB)
-- ARGV[4]  largest delta seen ("" if none)
-- ARGV[5]  largest memory after a run ("" if none)
-- ARGV[6]  largest peak ("" if none)
-- ARGV[7]  last delta, ARGV[8] last before, ARGV[9] last after (MB)
-- ARGV[10] last peak ("" if unknown)
-- ARGV[11] update time (seconds)
-- Returns  1

local k = KEYS[1]
redis.call('HINCRBY', k, 'count', ARGV[2])
redis.call('HINCRBYFLOAT', k, 'sum_delta_mb', ARGV[3])
local function hmax(f, v)
  if v == '' then return end
  local cur = tonumber(redis.call('HGET', k, f))
  if cur == nil or tonumber(v) > cur then redis.call('HSET', k, f, v) end
end
hmax('max_delta_mb', ARGV[4])
hmax('max_after_mb', ARGV[5])
hmax('max_peak_mb', ARGV[6])
redis.call('HSET', k, 'last_delta_mb', ARGV[7], 'last_before_mb', ARGV[8],
           'last_after_mb', ARGV[9], 'updated', ARGV[11])
if ARGV[10] ~= '' then redis.call('HSET', k, 'last_peak_mb', ARGV[10]) end
redis.call('EXPIRE', k, ARGV[1])
return 1
