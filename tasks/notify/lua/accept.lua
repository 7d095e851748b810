-- accept: record what a sink decided about the entries it just read from its streams.
--
-- In stream order, per entry: its `seq` moves the sink's position on that stream (a gap is
-- counted as missed: entries the cap trimmed before the sink read them; a `seq` at or below
-- the position was read before and is skipped). Then, by the decision:
--   queue   the rendered message enters the outbox, due now at every destination; the entry
--           stays pending in the group (moved to consumer "outbox") until every destination
--           succeeded or dead-lettered it (settle.lua acknowledges it then);
--   digest  its one-line form joins the digest being collected (over the cap: counted); acked;
--   skip    filtered out; acked;
--   gone    trimmed while pending after a crash (its gap is counted by `seq`); acked.
-- Finally the outbox is held to its cap: the oldest messages are dead-lettered (reason
-- "outbox full") at every destination still owing them, and their entries acknowledged.
--
-- KEYS[1]  sink state (HASH)          KEYS[2]  outbox (HASH key -> JSON)
-- KEYS[3]  queue (ZSET key -> time)   KEYS[4]  dead letters (LIST)
-- KEYS[5]  digest (LIST)
-- KEYS[6 .. 5+D]        due set of each destination (ZSET), in ARGV[2] order
-- KEYS[6+D .. 5+D+S]    each stream of the sink, in ARGV[3] order
-- ARGV[1]  group name
-- ARGV[2]  JSON destination ids
-- ARGV[3]  JSON stream names
-- ARGV[4]  outbox cap
-- ARGV[5]  dead-letter cap
-- ARGV[6]  digest cap (lines)
-- ARGV[7]  JSON decisions [{s: stream index (1-based), id, seq (or null), last (a packed logs
--          entry: the last seq it covers), a: action, k: message key, r: record JSON (queue)
--          or line (digest), m: missing template fields}]
-- Returns  {queued, skipped, digested, duplicates, missed, evicted}

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local dests = cjson.decode(ARGV[2])
local streams = cjson.decode(ARGV[3])
local nd = #dests
local function due_key(i) return KEYS[5 + i] end
local function stream_key(i) return KEYS[5 + nd + i] end
local function stream_index(name)
  for i = 1, #streams do if streams[i] == name then return i end end
  return nil
end

local queued, skipped, digested, dups, missed = 0, 0, 0, 0, 0
local decisions = cjson.decode(ARGV[7])
for _, d in ipairs(decisions) do
  local action = d.a
  local skey = stream_key(d.s)
  if type(d.seq) == 'number' then
    local field = 'pos:' .. streams[d.s]
    local pos = tonumber(redis.call('HGET', KEYS[1], field) or '0')
    if d.seq <= pos then
      action = 'dup'
    else
      if d.seq > pos + 1 then
        local gap = d.seq - pos - 1
        missed = missed + gap
        redis.call('HINCRBY', KEYS[1], 'missed:' .. streams[d.s], gap)
      end
      -- a packed logs entry covers `last` - `seq` + 1 numbers (its lines)
      redis.call('HSET', KEYS[1], field, d.last or d.seq)
    end
  end
  if action == 'queue' then
    redis.call('HSET', KEYS[2], d.k, d.r)
    redis.call('ZADD', KEYS[3], now, d.k)
    for i = 1, nd do redis.call('ZADD', due_key(i), now, d.k) end
    redis.call('XCLAIM', skey, ARGV[1], 'outbox', 0, d.id, 'JUSTID')
    queued = queued + 1
  else
    if action == 'digest' then
      if redis.call('LLEN', KEYS[5]) < tonumber(ARGV[6]) then
        redis.call('RPUSH', KEYS[5], d.r)
      else
        redis.call('HINCRBY', KEYS[1], 'digest_more', 1)
      end
      redis.call('HSETNX', KEYS[1], 'digest_start', now)
      redis.call('HINCRBY', KEYS[1], 'digest_items', 1)
      digested = digested + 1
    elseif action == 'dup' then
      dups = dups + 1
    else
      skipped = skipped + 1
    end
    redis.call('XACK', skey, ARGV[1], d.id)
  end
  if d.m and d.m > 0 then redis.call('HINCRBY', KEYS[1], 'template_missing', d.m) end
end
if queued > 0 then redis.call('HINCRBY', KEYS[1], 'queued', queued) end
if skipped > 0 then redis.call('HINCRBY', KEYS[1], 'filtered', skipped) end
if missed > 0 then redis.call('HINCRBY', KEYS[1], 'missed', missed) end

-- hold the outbox to its cap
local evicted = 0
local over = redis.call('HLEN', KEYS[2]) - tonumber(ARGV[4])
if over > 0 then
  local oldest = redis.call('ZRANGE', KEYS[3], 0, over - 1)
  for _, key in ipairs(oldest) do
    local raw = redis.call('HGET', KEYS[2], key)
    if raw then
      local r = cjson.decode(raw)
      for i = 1, nd do
        local st = r.d[dests[i]]
        if st then
          redis.call('LPUSH', KEYS[4], cjson.encode({
            ref = key .. '#' .. dests[i], key = key, dest = dests[i], stream = r.s, id = r.id,
            title = r.t, body = r.b, attempts = st[1], error = st[3], reason = 'outbox full',
            at = now}))
          redis.call('HINCRBY', KEYS[1], 'failed', 1)
          redis.call('HINCRBY', KEYS[1], 'failed:' .. dests[i], 1)
        end
        redis.call('ZREM', due_key(i), key)
      end
      local si = stream_index(r.s)
      if si and r.id ~= '' then redis.call('XACK', stream_key(si), ARGV[1], r.id) end
      redis.call('HDEL', KEYS[2], key)
      evicted = evicted + 1
    end
    redis.call('ZREM', KEYS[3], key)
  end
  local extra = redis.call('LLEN', KEYS[4]) - tonumber(ARGV[5])
  if extra > 0 then
    redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[5]) - 1)
    redis.call('HINCRBY', KEYS[1], 'dead_dropped', extra)
  end
  redis.call('HINCRBY', KEYS[1], 'evicted', evicted)
end
return {queued, skipped, digested, dups, missed, evicted}
