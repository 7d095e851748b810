-- write_lines: append one batch of TCP lines to the `logs` stream, exactly once, each entry
-- stamped with `seq` and `schema` as every stream entry is (workers/store/streams.py).
--
-- Exactly once: every listener instance numbers its batches and remembers the numbers it has
-- written in its own ZSET (KEYS[3]), so a batch resent after a lost reply or a broken
-- connection is acknowledged without writing — and a batch that failed (an error reply) while
-- a later one succeeded is still written when resent: membership, not a high-water mark.
-- Another listener on the same Redis has its own ZSET and never hides this one's batches.
--
-- With replicas, the writer follows each round of batches with WAIT on the same connection and
-- lets go of them only when enough replicas have them (workers/store/replicas.py).
--
-- Nothing is written before the first XADD (the counter is read, and advanced at the end), so
-- an error there (OOM, a wrong type) leaves no trace and the resend writes the whole batch.
--
-- `seq` counts lines: a packed entry (ARGV[6] > 1, fields `lines` and `count`) carries the seq
-- of its first line and covers `count` numbers, so a reader's gap in seq is always the number
-- of lines it missed (workers/tcp/entries.py unpacks entries into lines).
--
-- Each entry's bytes go to the stream's byte ledger, and the stream is trimmed oldest first to
-- its cap and byte budget at the end of the call (lib/stream_budget.lua): a peer that sends
-- 100 KB lines fills the budget, not 100,000 entries of them.
--
-- KEYS[1]  the `logs` stream
-- KEYS[2]  the stream's sequence counter (STRING, shared with the stream's other writers)
-- KEYS[3]  this listener instance's written batch numbers: ZSET number → number (the newest
--          ARGV[4] are kept; TTL ARGV[3])
-- KEYS[4]  the stream's byte ledger (STRING, workers/store/lua/lib/stream_budget.lua)
-- ARGV[1]  stream cap in lines (once per batch, scaled to entries)
-- ARGV[2]  batch number (per listener instance, from 1)
-- ARGV[3]  marker TTL, seconds
-- ARGV[4]  batch numbers remembered (more than the batches a listener has in flight)
-- ARGV[5]  stream schema version
-- ARGV[6]  lines per entry: 1 = one entry per line (field `line`); N > 1 = up to N lines of
--          one chunk per entry (fields `lines`, newline-joined, and `count`)
-- ARGV[7]  the stream's byte budget
-- ARGV[8..] per chunk, three values: peer, received_at, its lines joined by "\n"
-- Returns  {lines written, entries written, 1 if the batch had been written before else 0}

local done = redis.call('ZRANGEBYSCORE', KEYS[3], ARGV[2], ARGV[2])
if #done > 0 then
  -- Still a write (the TTL refreshed), so a WAIT that follows on this connection waits for
  -- everything the primary wrote before it, the first write of this batch included.
  redis.call('EXPIRE', KEYS[3], ARGV[3])
  local lines, entries = string.match(done[1], '^%d+:(%d+):(%d+)$')
  return {tonumber(lines), tonumber(entries), 1}
end
local key = KEYS[1]
local pack = tonumber(ARGV[6])
local schema = ARGV[5]
local seq = tonumber(redis.call('GET', KEYS[2]) or '0')
local first = seq
local entries = 0
local sizes = {}
-- Bytes of every entry's fixed field names and values ('source', 'tcp', 'peer', ... 'schema')
-- besides the line(s) and the seq: 6+3+4+11+3+6 names and values, plus `line` (4) or
-- `lines` and `count` (5+5).
local fixed = 33 + #schema
-- The digits of seq, kept by comparison as it grows (a tostring per line would cost Redis about
-- a microsecond: Lua interns every string it makes).
local digits, above = 1, 10
while above <= seq + 1 do digits, above = digits + 1, above * 10 end
for i = 8, #ARGV, 3 do
  local peer, at, payload = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local common = fixed + #peer + #at
  local pos = 1
  if pack == 1 then
    while true do
      local nl = string.find(payload, '\n', pos, true)
      local piece
      if nl then piece = string.sub(payload, pos, nl - 1) else piece = string.sub(payload, pos) end
      seq = seq + 1
      if seq >= above then digits, above = digits + 1, above * 10 end
      redis.call('XADD', key, '*', 'source', 'tcp', 'peer', peer, 'received_at', at,
                 'line', piece, 'seq', seq, 'schema', schema)
      entries = entries + 1
      sizes[entries] = common + 4 + #piece + digits
      if not nl then break end
      pos = nl + 1
    end
  else
    while true do
      local stop, k, nl = pos, 0, nil
      repeat
        nl = string.find(payload, '\n', stop, true)
        k = k + 1
        if nl then stop = nl + 1 end
      until (not nl) or k >= pack
      local piece
      if nl then piece = string.sub(payload, pos, nl - 1) else piece = string.sub(payload, pos) end
      while seq + 1 >= above do digits, above = digits + 1, above * 10 end
      local size
      if k == 1 then
        redis.call('XADD', key, '*', 'source', 'tcp', 'peer', peer, 'received_at', at,
                   'line', piece, 'seq', seq + 1, 'schema', schema)
        size = common + 4 + #piece + digits
      else
        redis.call('XADD', key, '*', 'source', 'tcp', 'peer', peer, 'received_at', at,
                   'lines', piece, 'count', k, 'seq', seq + 1, 'schema', schema)
        size = common + 10 + budget_digits(k) + #piece + digits
      end
      seq = seq + k
      entries = entries + 1
      sizes[entries] = size
      if not nl then break end
      pos = nl + 1
    end
  end
end
if seq > first then
  redis.call('INCRBY', KEYS[2], seq - first)
end
-- The cap counts lines, so packing cannot multiply what the stream holds: the lines held run
-- from the oldest entry's seq to the newest; keep the share of entries that holds about
-- `cap` of them (an estimate when entry sizes vary; each batch corrects it).
local cap = tonumber(ARGV[1])
local held_entries = redis.call('XLEN', key)
local oldest = redis.call('XRANGE', key, '-', '+', 'COUNT', 1)[1]
local held = held_entries
if oldest then
  local f = oldest[2]
  for j = 1, #f - 1, 2 do
    if f[j] == 'seq' then
      held = math.max(held_entries, seq - tonumber(f[j + 1]) + 1)
      break
    end
  end
end
local keep = held_entries
if held > cap then
  keep = math.ceil(held_entries * cap / held)
end
budget_add(key, KEYS[4], sizes, keep, tonumber(ARGV[7]), held_entries)
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[2] .. ':' .. (seq - first) .. ':' .. entries)
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[4]) + 1))
redis.call('EXPIRE', KEYS[3], ARGV[3])
return {seq - first, entries, 0}
