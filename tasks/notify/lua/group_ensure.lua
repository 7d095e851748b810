-- group_ensure: make sure a sink's consumer group exists on one of its streams.
--
-- A sink seen for the first time starts at the end of the stream ('$'): it takes what is
-- written from now on, and its position (the last `seq` read) starts at the stream's counter,
-- so nothing before is counted as missed. A sink that had a position but whose group is gone
-- (the stream was deleted, or Redis lost it) starts again from the first entry ('0'); the
-- entries it had already read are skipped by `seq` when they are accepted. A counter below
-- the position means the counter itself was lost: the position restarts at 0.
--
-- KEYS[1]  the stream
-- KEYS[2]  the stream's seq counter
-- KEYS[3]  the sink's state hash
-- ARGV[1]  group name
-- ARGV[2]  the position field in the state hash (pos:<stream>)
-- Returns  "exists", "created" or "recreated"

local counter = tonumber(redis.call('GET', KEYS[2]) or '0')
local pos = redis.call('HGET', KEYS[3], ARGV[2])
local start = '$'
if pos then start = '0' end
local ok, err = pcall(redis.call, 'XGROUP', 'CREATE', KEYS[1], ARGV[1], start, 'MKSTREAM')
if not ok then
  if string.find(tostring(err), 'BUSYGROUP') then
    if not pos then redis.call('HSET', KEYS[3], ARGV[2], counter) end
    return 'exists'
  end
  return redis.error_reply(tostring(err))
end
if not pos then
  redis.call('HSET', KEYS[3], ARGV[2], counter)
  return 'created'
end
if tonumber(pos) > counter then
  redis.call('HSET', KEYS[3], ARGV[2], 0)
end
return 'recreated'
