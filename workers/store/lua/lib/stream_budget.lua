-- stream_budget (library, included by every script that XADDs to an output stream): each
-- stream's entry cap and byte budget, enforced in the call that adds.
--
-- An entry's bytes are the lengths of its field names and values (what the writer chose to
-- store; Redis's own per-entry overhead is bounded by the entry cap). Each stream has a ledger
-- of its entries' sizes, oldest first (a LIST whose elements are 4-byte big-endian sizes, one
-- element per writing call: one RPUSH per call, however many entries) and a counter (HASH
-- `bytes` held, `entries` recorded). A writer XADDs without MAXLEN, measures each entry
-- (`budget_bytes`, or its own sum of lengths) and ends with one `budget_add`: the oldest entries
-- are removed until at most `keep` entries and `budget` bytes remain — one exact XTRIM MAXLEN,
-- their sizes consumed from the head of the ledger. Oldest-first removal keeps the `seq`
-- contract exact: a reader's gap in `seq` is what was trimmed. An entry bigger than the whole
-- budget is trimmed by the call that wrote it (its `seq` is still counted).
--
-- Every writer keeps the ledger in step with the stream; if entries went another way (an XTRIM
-- by hand, a writer of an older version), the recorded count and XLEN differ and are put right
-- first: extra sizes are dropped from the oldest end, and as many of the oldest entries as the
-- ledger lacks are read once and measured. A stream without a counter (new, or written before
-- ledgers existed) is measured whole once.
--
-- budget_bytes(fields)    size of a flat {name, value, ...} list of strings
-- budget_digits(n)        length of a positive integer written out (a seq), without a string
-- budget_add(stream, sizes, counter, list, total, keep, budget)
--   stream, sizes, counter   the stream, its ledger and its counter (keys from KEYS)
--   list, total              the sizes of the entries this call added, in order, and their sum
--   keep                     most entries kept (the entry cap)
--   budget                   most bytes kept
-- Returns {entries trimmed, bytes freed}

local function budget_bytes(fields)
  local n = 0
  for i = 1, #fields do
    n = n + #fields[i]
  end
  return n
end

-- (tostring would intern a new string: about a microsecond of Redis time per entry.)
local function budget_digits(n)
  local d = 1
  while n >= 10 do
    n, d = n / 10, d + 1
  end
  return d
end

-- Sizes list[from..to] as one string of 4-byte big-endian integers (struct packs in C: no
-- string per entry, which would cost Redis about a microsecond each).
local function budget_pack(list, from, to)
  local parts = {}
  for i = from, to, 1000 do
    local j = math.min(i + 999, to)
    parts[#parts + 1] = struct.pack('>' .. string.rep('I4', j - i + 1), unpack(list, i, j))
  end
  return table.concat(parts)
end

-- Take sizes from the head of the ledger while fewer than `min_entries` are taken or more
-- than `budget` of `bytes` would remain; returns entries taken, their bytes.
local function budget_take(sizes, min_entries, bytes, budget)
  local taken, freed = 0, 0
  local step = '>' .. string.rep('I4', 256)
  while taken < min_entries or bytes - freed > budget do
    local head = redis.call('LINDEX', sizes, 0)
    if not head then break end
    local n, pos, used = math.floor(#head / 4), 1, 0
    while used < n and (taken < min_entries or bytes - freed > budget) do
      local k = math.min(256, n - used)
      local values = {struct.unpack(k == 256 and step or '>' .. string.rep('I4', k), head, pos)}
      pos = values[k + 1]
      for i = 1, k do
        if not (taken < min_entries or bytes - freed > budget) then break end
        freed, taken, used = freed + values[i], taken + 1, used + 1
      end
    end
    if used < n then
      redis.call('LSET', sizes, 0, string.sub(head, used * 4 + 1))
      break
    end
    redis.call('LPOP', sizes)
  end
  return taken, freed
end

-- Entries the ledger never saw: the oldest `missing` ones, read once, measured and put first.
local function budget_adopt(stream, sizes, missing)
  local found, start, total = {}, '-', 0
  while #found < missing do
    local rows = redis.call('XRANGE', stream, start, '+', 'COUNT', math.min(100, missing - #found))
    if #rows == 0 then break end
    for _, row in ipairs(rows) do
      found[#found + 1] = budget_bytes(row[2])
      total = total + found[#found]
    end
    start = '(' .. rows[#rows][1]
  end
  if #found > 0 then
    redis.call('LPUSH', sizes, budget_pack(found, 1, #found))
  end
  return #found, total
end

local function budget_add(stream, sizes, counter, list, total, keep, budget)
  local c = redis.call('HMGET', counter, 'entries', 'bytes')
  local held = redis.call('XLEN', stream)
  local known, bytes
  if not c[1] then
    -- No ledger yet (a new stream, or one written before ledgers existed): measure every
    -- entry the stream holds, this call's included, once.
    redis.call('DEL', sizes)
    known, bytes = budget_adopt(stream, sizes, held)
  else
    if #list > 0 then
      redis.call('RPUSH', sizes, budget_pack(list, 1, #list))
    end
    known, bytes = tonumber(c[1]) + #list, (tonumber(c[2]) or 0) + total
    if known > held then
      local _, gone = budget_take(sizes, known - held, 0, math.huge)
      bytes = bytes - gone
    elseif known < held then
      local _, more = budget_adopt(stream, sizes, held - known)
      bytes = bytes + more
    end
  end
  local remove, freed = 0, 0
  if held > keep or bytes > budget then
    remove, freed = budget_take(sizes, math.max(0, held - keep), bytes, budget)
    redis.call('XTRIM', stream, 'MAXLEN', held - remove)
  end
  redis.call('HSET', counter, 'entries', held - remove, 'bytes', bytes - freed)
  return {remove, freed}
end
