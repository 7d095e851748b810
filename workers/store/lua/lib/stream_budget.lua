-- stream_budget (library, included by every script that XADDs to an output stream): each
-- stream's entry cap and byte budget, enforced in the call that adds.
--
-- An entry's bytes are the lengths of its field names and values (what the writer chose to
-- store; Redis's own per-entry overhead is bounded by the entry cap). Each stream has a byte
-- ledger, one STRING: for each entry it holds, oldest first from byte `head`, the running
-- total of bytes written up to and including that entry (4-byte big-endian, modulo 2^32),
-- then a 48-character trailer of three 16-digit numbers: `head`, `start` (the running total
-- before the oldest entry held) and the bytes held (`GETRANGE key -16 -1`, readable by any
-- client). The bytes that k entries take is then one subtraction of two totals, so trimming
-- reads one or two values whatever it removes — exact, and modulo 2^32 exact as long as the
-- bytes held stay under 4 GiB (budgets are capped at 2 GiB).
--
-- A writer XADDs without MAXLEN, measures each entry (`budget_bytes`, or its own sum of
-- lengths) and ends with one `budget_add`: the oldest entries are removed until at most `keep`
-- entries and `budget` bytes remain (one exact XTRIM MAXLEN; for the budget a binary search
-- over the totals), `head` moves past them, and the new totals and the trailer are written
-- with one SETRANGE; the skipped front is cut off (one SET) once it is past half the string
-- and 64 KB. Oldest-first removal keeps the `seq` contract exact: a reader's gap in `seq` is
-- what was trimmed. An entry bigger than the whole budget is trimmed by the call that wrote
-- it (its `seq` is still counted).
--
-- Every writer keeps the ledger in step with the stream; if entries went another way (an XTRIM
-- by hand, a writer of an older version), the ledger's count and XLEN differ and are put right
-- first: extra entries are dropped from the oldest end, and as many of the oldest entries as
-- the ledger lacks are read once and measured (sizes so attributed to the wrong entries are
-- gone once those are trimmed). A stream without a ledger (new, or written before ledgers
-- existed) is measured whole once.
--
-- budget_bytes(fields)   size of a flat {name, value, ...} list of strings
-- budget_digits(n)       length of a positive integer written out (a seq), without a string
-- budget_add(stream, ledger, list, keep, budget, held)
--   stream, ledger   the stream and its byte ledger (keys from KEYS)
--   list             the sizes of the entries this call added, in order
--   keep, budget     most entries kept (the entry cap) and most bytes kept
--   held             the stream's XLEN now, if the caller has it (else nil)
-- Returns {entries trimmed, bytes freed}

local BUDGET_MOD = 4294967296

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

-- Values list[from..to] as 4-byte big-endian integers, packed in C (struct).
local function budget_pack(list, from, to)
  local parts = {}
  for i = from, to, 1000 do
    local j = math.min(i + 999, to)
    parts[#parts + 1] = struct.pack('>' .. string.rep('I4', j - i + 1), unpack(list, i, j))
  end
  return table.concat(parts)
end

-- The sizes of the oldest `count` entries of the stream, read once.
local function budget_measure(stream, count)
  local found, start = {}, '-'
  while #found < count do
    local rows = redis.call('XRANGE', stream, start, '+', 'COUNT', math.min(100, count - #found))
    if #rows == 0 then break end
    for _, row in ipairs(rows) do
      found[#found + 1] = budget_bytes(row[2])
    end
    start = '(' .. rows[#rows][1]
  end
  return found
end

-- Running totals, from `from`, of the sizes in `list` (mod 2^32).
local function budget_totals(from, list)
  local out, total = {}, from
  for i = 1, #list do
    total = (total + list[i]) % BUDGET_MOD
    out[i] = total
  end
  return out, total
end

local function budget_add(stream, ledger, list, keep, budget, held)
  held = held or redis.call('XLEN', stream)
  local len = redis.call('STRLEN', ledger)
  local head, start, bytes, old, data = 0, 0, 0, 0, nil
  if len < 48 then
    -- No ledger yet: measure every entry the stream holds, this call's included, once.
    list, data = budget_measure(stream, held), ''
  else
    local trailer = redis.call('GETRANGE', ledger, len - 48, len - 1)
    head = tonumber(string.sub(trailer, 1, 16))
    start = tonumber(string.sub(trailer, 17, 32))
    bytes = tonumber(string.sub(trailer, 33, 48))
    old = (len - 48 - head) / 4
    local missing = held - old - #list
    if missing > 0 then
      -- Entries the ledger never saw: measure the oldest that many and put them first.
      local sizes, sum = budget_measure(stream, missing), 0
      for i = 1, #sizes do sum = sum + sizes[i] end
      local before = (start - sum) % BUDGET_MOD
      local totals = budget_totals(before, sizes)
      local region = old > 0 and redis.call('GETRANGE', ledger, head, len - 49) or ''
      data = budget_pack(totals, 1, #totals) .. region
      start, bytes, old, head = before, bytes + sum, old + #sizes, 0
    end
  end
  local totals, last = budget_totals((start + bytes) % BUDGET_MOD, list)
  local n = old + #totals
  local function total_at(i) -- running total after the i-th entry held (1-based); 0: start
    if i == 0 then return start end
    if i > old then return totals[i - old] end
    if data then return (struct.unpack('>I4', data, i * 4 - 3)) end
    return (struct.unpack('>I4', redis.call('GETRANGE', ledger, head + i * 4 - 4, head + i * 4 - 1)))
  end
  local function bytes_after(k) -- bytes held once the oldest k are gone
    return (last - total_at(k)) % BUDGET_MOD
  end
  -- From the front: entries the stream no longer has (it holds fewer than the ledger
  -- records), then as many as the cap wants, then as many more as the budget wants.
  local drop = math.max(0, n - held)
  local k = math.min(n, drop + math.max(0, held - keep))
  if k < n and bytes_after(k) > budget then
    local lo, hi = k, n -- bytes_after(lo) > budget >= bytes_after(hi) = 0
    while hi - lo > 1 do
      local mid = math.floor((lo + hi) / 2)
      if bytes_after(mid) > budget then lo = mid else hi = mid end
    end
    k = hi
  end
  local taken = k - drop
  local freed = bytes_after(drop) - bytes_after(k)
  if taken > 0 then
    redis.call('XTRIM', stream, 'MAXLEN', held - taken)
  end
  start = total_at(k)
  local trailer = string.format('%016d%016d%016d', head + k * 4, start, bytes_after(k))
  local fresh = math.max(1, k - old + 1)
  if not data and k < old and not (head + k * 4 >= 65536 and (head + k * 4) * 2 > len) then
    redis.call('SETRANGE', ledger, len - 48, budget_pack(totals, 1, #totals) .. trailer)
  else
    -- Rewrite whole: what is left of the old totals, then this call's (a fresh or repaired
    -- ledger, everything old trimmed, or a skipped front past half the string and 64 KB).
    local rest = ''
    if k < old then
      rest = data and string.sub(data, k * 4 + 1) or
        redis.call('GETRANGE', ledger, head + k * 4, len - 49)
    end
    trailer = string.format('%016d%016d%016d', 0, start, bytes_after(k))
    redis.call('SET', ledger, rest .. budget_pack(totals, fresh, #totals) .. trailer)
  end
  return {taken, freed}
end
