-- settle: record the outcome of one destination's sends, and acknowledge finished entries.
--
-- Per message: "ok" clears this destination's share; "retry" counts the attempt and sets its
-- next time; "dead" moves it to the sink's dead-letter list; "drop" clears the share of a
-- destination the sink no longer has (cleanup), counting nothing. A message no destination owes
-- any more leaves the outbox, and its stream entry is acknowledged in the sink's group — so an
-- entry is acknowledged only once every destination succeeded or dead-lettered it. Every
-- outcome joins the delivery log. Other destinations settle the same messages concurrently:
-- each call re-reads the record and changes only its own destination's share.
--
-- KEYS[1]  sink state (HASH)     KEYS[2]  outbox (HASH)      KEYS[3]  queue (ZSET)
-- KEYS[4]  dead letters (LIST)   KEYS[5]  delivery log (LIST)
-- KEYS[6]  this destination's due set (ZSET)
-- KEYS[7 .. 6+S]  each stream of the sink, in ARGV[3] order
-- ARGV[1]  group name
-- ARGV[2]  destination id
-- ARGV[3]  JSON stream names
-- ARGV[4]  dead-letter cap
-- ARGV[5]  delivery-log cap
-- ARGV[6]  JSON outcomes [{k: message key, o: "ok" | "retry" | "dead" | "drop", n: seconds until the
--          next attempt (retry), e: error, t: 1 when truncated, l: delivery-log record (JSON)}]
-- Returns  {delivered, retried, dead, acknowledged}

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local dest = ARGV[2]
local streams = cjson.decode(ARGV[3])
local counts = {0, 0, 0, 0}
for _, o in ipairs(cjson.decode(ARGV[6])) do
  local raw = redis.call('HGET', KEYS[2], o.k)
  local r = raw and cjson.decode(raw)
  local st = r and r.d[dest]
  if not st then
    redis.call('ZREM', KEYS[6], o.k)
  else
    if o.o == 'ok' then
      r.d[dest] = nil
      redis.call('ZREM', KEYS[6], o.k)
      redis.call('HINCRBY', KEYS[1], 'delivered', 1)
      redis.call('HINCRBY', KEYS[1], 'delivered:' .. dest, 1)
      counts[1] = counts[1] + 1
    elseif o.o == 'drop' then
      r.d[dest] = nil
      redis.call('ZREM', KEYS[6], o.k)
    elseif o.o == 'retry' then
      st[1] = st[1] + 1
      st[2] = now + o.n
      st[3] = o.e
      redis.call('ZADD', KEYS[6], st[2], o.k)
      redis.call('HINCRBY', KEYS[1], 'retried', 1)
      redis.call('HINCRBY', KEYS[1], 'retried:' .. dest, 1)
      counts[2] = counts[2] + 1
    else
      redis.call('LPUSH', KEYS[4], cjson.encode({
        ref = o.k .. '#' .. dest, key = o.k, dest = dest, stream = r.s, id = r.id,
        title = r.t, body = r.b, attempts = st[1] + 1, error = o.e, reason = o.e, at = now}))
      r.d[dest] = nil
      redis.call('ZREM', KEYS[6], o.k)
      redis.call('HINCRBY', KEYS[1], 'failed', 1)
      redis.call('HINCRBY', KEYS[1], 'failed:' .. dest, 1)
      counts[3] = counts[3] + 1
    end
    if o.t == 1 then redis.call('HINCRBY', KEYS[1], 'truncated', 1) end
    if next(r.d) == nil then
      redis.call('HDEL', KEYS[2], o.k)
      redis.call('ZREM', KEYS[3], o.k)
      for i = 1, #streams do
        if streams[i] == r.s and r.id ~= '' then
          redis.call('XACK', KEYS[6 + i], ARGV[1], r.id)
          counts[4] = counts[4] + 1
        end
      end
    else
      redis.call('HSET', KEYS[2], o.k, cjson.encode(r))
    end
  end
  if o.l then redis.call('LPUSH', KEYS[5], o.l) end
end
redis.call('LTRIM', KEYS[5], 0, tonumber(ARGV[5]) - 1)
local extra = redis.call('LLEN', KEYS[4]) - tonumber(ARGV[4])
if extra > 0 then
  redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[4]) - 1)
  redis.call('HINCRBY', KEYS[1], 'dead_dropped', extra)
end
return counts
