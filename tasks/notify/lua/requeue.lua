-- requeue: send dead letters again (`watchkeeper notify retry`).
--
-- Each chosen dead letter leaves the list and its message owes its destination a delivery
-- again, due now with a fresh attempt count: into the message's outbox record if other
-- destinations still owe it, else into a new record built from the dead letter (which keeps
-- the rendered message, so it does not depend on the stream still holding the entry). A dead
-- letter of a destination the sink no longer has stays where it is.
--
-- KEYS[1]  sink state (HASH)   KEYS[2]  outbox (HASH)   KEYS[3]  queue (ZSET)
-- KEYS[4]  dead letters (LIST)
-- KEYS[5 .. 4+D]  due set of each destination, in ARGV[1] order
-- ARGV[1]  JSON destination ids
-- ARGV[2]  the dead letter's ref (key#dest), or "*" for all
-- Returns  {requeued, left (destination gone)}

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local dests = cjson.decode(ARGV[1])
local requeued, left = 0, 0
for _, raw in ipairs(redis.call('LRANGE', KEYS[4], 0, -1)) do
  local dl = cjson.decode(raw)
  if ARGV[2] == '*' or dl.ref == ARGV[2] then
    local slot = nil
    for i = 1, #dests do if dests[i] == dl.dest then slot = i end end
    if slot then
      local existing = redis.call('HGET', KEYS[2], dl.key)
      local r
      if existing then
        r = cjson.decode(existing)
      else
        r = {k = dl.key, s = dl.stream, id = dl.id, t = dl.title, b = dl.body, at = now, d = {}}
      end
      r.d[dl.dest] = {0, now, ''}
      redis.call('HSET', KEYS[2], dl.key, cjson.encode(r))
      redis.call('ZADD', KEYS[3], 'NX', now, dl.key)
      redis.call('ZADD', KEYS[4 + slot], now, dl.key)
      redis.call('LREM', KEYS[4], 1, raw)
      requeued = requeued + 1
    else
      left = left + 1
    end
  end
end
if requeued > 0 then redis.call('HINCRBY', KEYS[1], 'requeued', requeued) end
return {requeued, left}
