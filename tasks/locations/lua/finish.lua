-- finish: write location results, each alert at most once.
--
-- An alert is located only if its marker is still there, removed in the same step: whoever
-- gets there first (a batch, a fallback after retries, an eviction, a stale-marker expiry)
-- locates it, everyone else skips it. Its payload goes with it. The stream is trimmed to its
-- cap and byte budget at the end (workers/store/lua/lib/stream_budget.lua).
--
-- KEYS[1]  markers: ZSET alert id → queued at
-- KEYS[2]  buffer: ZSET alert id → enqueued at
-- KEYS[3]  counters: HASH
-- KEYS[4]  the locations stream
-- KEYS[5]  its sequence counter (STRING)
-- KEYS[6]  payloads: HASH alert id → JSON title, summary, source, coordinates
-- KEYS[7]  the stream's byte ledger (STRING, workers/store/lua/lib/stream_budget.lua)
-- ARGV[1]  stream cap: entries kept
-- ARGV[2]  counters TTL (seconds)
-- ARGV[3]  stream schema version
-- ARGV[4]  stream byte budget: bytes kept
-- ARGV[5…] quadruples: alert id, location JSON, method, fallback reason ("" if none)
-- Returns  the ids located by this call

local t = redis.call('TIME')
local now = string.format('%.6f', tonumber(t[1]) + tonumber(t[2]) / 1000000)
local done = {}
local sizes = {}
for i = 5, #ARGV, 4 do
  local id = ARGV[i]
  if redis.call('ZREM', KEYS[1], id) == 1 then
    redis.call('ZREM', KEYS[2], id)
    local source, title = '', ''
    local raw = redis.call('HGET', KEYS[6], id)
    if raw then
      local ok, payload = pcall(cjson.decode, raw)
      if ok and type(payload) == 'table' then
        source, title = payload['source'] or '', payload['title'] or ''
      end
    end
    redis.call('HDEL', KEYS[6], id)
    local fields = {'alert', id, 'source', tostring(source), 'title', tostring(title),
                    'location', ARGV[i + 1], 'location_method', ARGV[i + 2],
                    'fallback_reason', ARGV[i + 3], 'located_at', now,
                    'seq', tostring(redis.call('INCR', KEYS[5])), 'schema', ARGV[3]}
    redis.call('XADD', KEYS[4], '*', unpack(fields))
    sizes[#sizes + 1] = budget_bytes(fields)
    redis.call('HINCRBY', KEYS[3], 'located:' .. ARGV[i + 2], 1)
    if ARGV[i + 3] ~= '' then
      redis.call('HINCRBY', KEYS[3], 'fallback:' .. ARGV[i + 3], 1)
    end
    done[#done + 1] = id
  end
end
if #sizes > 0 then
  budget_add(KEYS[4], KEYS[7], sizes, tonumber(ARGV[1]), tonumber(ARGV[4]))
end
redis.call('EXPIRE', KEYS[3], ARGV[2])
return done
