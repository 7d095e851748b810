-- stream_budget (library, included by every script that XADDs to an output stream): each
-- stream's entry cap and byte budget, enforced in the call that adds.
--
-- An entry's bytes are the lengths of its field names and values (what the writer chose to
-- store; Redis's own per-entry overhead is bounded by the entry cap). Each stream has a ledger
-- (LIST, oldest first: one size per entry the stream holds) and a byte counter (STRING, the
-- ledger's sum). A writer XADDs without MAXLEN, measures each entry with `budget_bytes`, hands
-- the sizes to `budget_push`, and calls `budget_trim` once at the end: the oldest entries are
-- removed until at most `keep` entries and `budget` bytes remain (one exact XTRIM MAXLEN, the
-- ledger popped by the same count, the counter lowered by their sizes). Oldest-first removal
-- keeps the `seq` contract exact: a reader's gap in `seq` is what was trimmed. An entry bigger
-- than the whole budget is trimmed in the call that wrote it (its `seq` is still counted).
--
-- Every writer keeps the ledger in step with the stream; if entries went another way (an XTRIM
-- by hand, a writer of an older version, entries written before the ledger existed), the
-- counts differ and are put right first: extra sizes are dropped from the oldest end, and
-- entries the ledger never saw are measured (read once, oldest first).
--
-- budget_bytes(fields)                       size of a flat {name, value, ...} list
-- budget_push(sizes, bytes, list, total)     record new entries' sizes (in order) and total
-- budget_trim(stream, sizes, bytes, keep, budget)
--   stream, sizes, bytes   the stream, its ledger and its byte counter (keys from KEYS)
--   keep                   most entries kept (the entry cap)
--   budget                 most bytes kept
-- Returns {entries trimmed, bytes freed}

local function budget_bytes(fields)
  local n = 0
  for i = 1, #fields do
    n = n + #tostring(fields[i])
  end
  return n
end

local function budget_push(sizes, bytes, list, total)
  for i = 1, #list, 1000 do
    redis.call('RPUSH', sizes, unpack(list, i, math.min(i + 999, #list)))
  end
  if total ~= 0 then
    redis.call('INCRBY', bytes, total)
  end
end

local function budget_sum(values)
  local n = 0
  for _, v in ipairs(values) do
    n = n + (tonumber(v) or 0)
  end
  return n
end

-- Entries the ledger never saw: the oldest `missing` ones, measured and put first.
local function budget_adopt(stream, sizes, bytes, missing)
  local found, start = {}, '-'
  while #found < missing do
    local rows = redis.call('XRANGE', stream, start, '+', 'COUNT', math.min(100, missing - #found))
    if #rows == 0 then break end
    for _, row in ipairs(rows) do
      found[#found + 1] = budget_bytes(row[2])
    end
    start = '(' .. rows[#rows][1]
  end
  local total = 0
  for i = #found, 1, -1 do
    redis.call('LPUSH', sizes, found[i])
    total = total + found[i]
  end
  if total ~= 0 then
    redis.call('INCRBY', bytes, total)
  end
end

local function budget_trim(stream, sizes, bytes, keep, budget)
  local held = redis.call('XLEN', stream)
  local known = redis.call('LLEN', sizes)
  if known > held then
    local gone = redis.call('LRANGE', sizes, 0, known - held - 1)
    redis.call('LTRIM', sizes, known - held, -1)
    redis.call('DECRBY', bytes, budget_sum(gone))
  elseif known < held then
    if known == 0 then redis.call('SET', bytes, 0) end
    budget_adopt(stream, sizes, bytes, held - known)
  end
  local total = tonumber(redis.call('GET', bytes) or '0')
  local remove, freed = 0, 0
  local function more() return remove < held - keep or total - freed > budget end
  while remove < held and more() do
    local chunk = redis.call('LRANGE', sizes, remove, remove + 255)
    if #chunk == 0 then break end
    for _, v in ipairs(chunk) do
      if not more() then break end
      freed = freed + (tonumber(v) or 0)
      remove = remove + 1
    end
  end
  if remove > 0 then
    redis.call('LTRIM', sizes, remove, -1)
    redis.call('XTRIM', stream, 'MAXLEN', held - remove)
    redis.call('DECRBY', bytes, freed)
  end
  return {remove, freed}
end
