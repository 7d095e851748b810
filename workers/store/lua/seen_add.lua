-- seen_add: dedup items against a source's seen-set, append the new ones to a stream, and
-- optionally hand them on to a capped queue — all in one atomic step.
--
-- A worker dying mid-poll can neither lose an item (key recorded, entry not written or not
-- handed on) nor write it twice. Keys seen again are touched (score = now), so an item still
-- served by its source is never the oldest. The set is trimmed to its cap, but never below
-- the keys touched since ARGV[6] (the poll's start): a source serving more items than the cap
-- keeps its whole window instead of re-emitting items on every poll. Time is Redis TIME.
-- Each entry gets `seq` (the stream's counter, so a reader can count entries it missed after
-- a trim) and `schema`; the stream is then trimmed to its entry cap and byte budget
-- (lib/stream_budget.lua).
--
-- KEYS[1]  seen-set: ZSET short hash → last seen (seconds)
-- KEYS[2]  output stream
-- KEYS[3]  the stream's sequence counter (STRING)
-- KEYS[4]  state hash of the poll that gets last_new / last_duplicate (with ARGV[5])
-- KEYS[5]  hand-off queue: ZSET stream id → enqueued at (with ARGV[7])
-- KEYS[6]  hand-off markers: ZSET stream id → enqueued at, every item not yet done
-- KEYS[7]  hand-off payloads: HASH stream id → payload
-- KEYS[8]  the stream's byte ledger (STRING, lib/stream_budget.lua)
-- ARGV[1]  cap: members kept
-- ARGV[2]  max_age: seconds a member not seen again is kept; 0 = no age limit
-- ARGV[3]  stream cap: entries kept
-- ARGV[4]  JSON [[hash, [field, value, ...] or absent, payload or absent], ...]
-- ARGV[5]  counts: "" none, "set" (first chunk of a poll), "incr" (later chunks)
-- ARGV[6]  poll start (seconds, Redis time): members touched since are never trimmed; 0 none
-- ARGV[7]  hand-off queue cap; "" = no hand-off
-- ARGV[8]  stream schema version
-- ARGV[9]  stream byte budget: bytes kept
-- Returns  {0-based indices of the new items, their stream ids, ids evicted from the queue}

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cap = tonumber(ARGV[1])
local max_age = tonumber(ARGV[2])
local protect = tonumber(ARGV[6])
local handoff = ARGV[7] ~= ''
if max_age > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - max_age))
end
local items = cjson.decode(ARGV[4])
local new, ids, evicted = {}, {}, {}
local sizes = {}
for i = 1, #items do
  if redis.call('ZADD', KEYS[1], now, items[i][1]) == 1 then
    new[#new + 1] = i - 1
    local fields = items[i][2]
    if fields then
      local seq = redis.call('INCR', KEYS[3])
      sizes[#sizes + 1] = budget_bytes(fields) + 9 + budget_digits(seq) + #ARGV[8]
      fields[#fields + 1] = 'seq'
      fields[#fields + 1] = seq
      fields[#fields + 1] = 'schema'
      fields[#fields + 1] = ARGV[8]
      local id = redis.call('XADD', KEYS[2], '*', unpack(fields))
      ids[#ids + 1] = id
      if handoff and items[i][3] then
        redis.call('HSET', KEYS[7], id, items[i][3])
        redis.call('ZADD', KEYS[6], 'NX', now, id)
        redis.call('ZADD', KEYS[5], now, id)
      end
    end
  end
end
if #sizes > 0 then
  budget_add(KEYS[2], KEYS[8], sizes, tonumber(ARGV[3]), tonumber(ARGV[9]))
end
if ARGV[5] == 'set' then
  redis.call('HSET', KEYS[4], 'last_new', #new, 'last_duplicate', #items - #new)
elseif ARGV[5] == 'incr' then
  redis.call('HINCRBY', KEYS[4], 'last_new', #new)
  redis.call('HINCRBY', KEYS[4], 'last_duplicate', #items - #new)
end
local n = redis.call('ZCARD', KEYS[1])
if n > cap then
  local excess = n - cap
  if protect > 0 then
    excess = math.min(excess, redis.call('ZCOUNT', KEYS[1], '-inf', '(' .. protect))
  end
  if excess > 0 then
    redis.call('ZREMRANGEBYRANK', KEYS[1], 0, excess - 1)
  end
end
if max_age > 0 then
  redis.call('EXPIRE', KEYS[1], max_age)
end
if handoff then
  local q = redis.call('ZCARD', KEYS[5])
  local qcap = tonumber(ARGV[7])
  if q > qcap then
    evicted = redis.call('ZRANGE', KEYS[5], 0, q - qcap - 1)
    redis.call('ZREMRANGEBYRANK', KEYS[5], 0, q - qcap - 1)
  end
end
return {new, ids, evicted}
