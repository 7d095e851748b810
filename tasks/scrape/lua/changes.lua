-- changes: remember each listing's price and presence; write what changed to `changes`.
--
-- Called with every listing of a scrape run (not only new ones). Per listing id the site keeps
-- the last reported price (its baseline), currency and the last complete run it was seen in.
-- A price that moved from its baseline by at least the site's threshold down (drop) or up
-- (rise) is a change, and becomes the new baseline (so a slow slide is reported once it adds
-- up). A baseline of 0 has no percentage: any move from it is a rise (reported when rises are)
-- and becomes the baseline. A price in another currency than the baseline's is a `currency`
-- change, never a price move, and becomes the baseline. A listing absent from at least one
-- complete run and seen again is "back". Each change is one entry on the capped `changes`
-- stream, stamped with the stream's next `seq`. The memory is bounded like a seen-set: an
-- exact cap on ids (least recently seen evicted) and an age.
--
-- Prices arrive as decimal strings and are stored as the same strings, so no number is ever
-- encoded here: one the scraper should never send (NaN, an infinity, negative, above ARGV[10],
-- not a number) is counted and treated as no price, and one listing can never fail the call
-- for the listings after it.
--
-- KEYS[1]  price memory (HASH "i:<id>" -> JSON {p, c, r}; "run" -> complete runs so far)
-- KEYS[2]  seen index (ZSET id -> last seen)
-- KEYS[3]  the changes stream
-- KEYS[4]  its seq counter
-- KEYS[5]  its byte ledger (STRING, workers/store/lua/lib/stream_budget.lua)
-- ARGV[1]  site name
-- ARGV[2]  drop threshold, percent ("" = drops not reported)
-- ARGV[3]  rise threshold, percent ("" = rises not reported)
-- ARGV[4]  cap: ids kept, exactly
-- ARGV[5]  max age: seconds an id not seen again is kept; 0 = no age limit
-- ARGV[6]  stream cap: entries kept
-- ARGV[7]  schema version
-- ARGV[8]  "1" when the run read every page (only then does an absence count)
-- ARGV[9]  JSON [[id, price (decimal string or null), currency (or null), fields (JSON)], ...]
-- ARGV[10] largest price taken (WATCHKEEPER_SCRAPE_MAX_PRICE)
-- ARGV[11] stream byte budget: bytes kept
-- Returns  {changes written, ids tracked, prices refused}

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local drop, rise = tonumber(ARGV[2]), tonumber(ARGV[3])
local cap, max_age = tonumber(ARGV[4]), tonumber(ARGV[5])
local max_price = tonumber(ARGV[10]) or 1e15
local run
if ARGV[8] == '1' then
  run = redis.call('HINCRBY', KEYS[1], 'run', 1)
else
  run = tonumber(redis.call('HGET', KEYS[1], 'run') or '0')
end
local function text(x) if type(x) == 'string' then return x end return '' end
local refused = 0

-- A usable price as {number, its text}, or nil; `count` counts a refused one.
local function price_of(x, count)
  if x == nil or x == cjson.null then return nil end
  local n
  if type(x) == 'string' and string.match(x, '^%d+%.?%d*$') then n = tonumber(x)
  elseif type(x) == 'number' then n = x end
  if n and n == n and n >= 0 and n <= max_price then
    if type(x) == 'string' then return {n, x} end
    return {n, string.format('%.15g', n)}
  end
  if count then refused = refused + 1 end
  return nil
end

-- What changed from the memory `st` to (price, currency): change, percent.
local function compare(st, price, currency)
  local old, old_currency = price_of(st.p), text(st.c)
  if price and old_currency ~= '' and currency ~= '' and old_currency ~= currency then
    return 'currency', nil
  end
  if not (old and price) or old[1] == price[1] then return nil, nil end
  if old[1] == 0 then
    if rise then return 'price_rise', nil end
    return 'rebase', nil
  end
  local pct = (price[1] - old[1]) / old[1] * 100
  if drop and pct < 0 and -pct >= drop then return 'price_drop', pct end
  if rise and pct > 0 and pct >= rise then return 'price_rise', pct end
  return nil, nil
end

local written, sizes = 0, {}
local ok_rows, rows = pcall(cjson.decode, ARGV[9])
if not ok_rows or type(rows) ~= 'table' then rows = {} end
for _, item in ipairs(rows) do
  local id = type(item) == 'table' and item[1]
  if type(id) == 'number' then id = string.format('%.15g', id) end
  if type(id) == 'string' and id ~= '' then
    local price, currency = price_of(item[2], true), text(item[3])
    local raw = redis.call('HGET', KEYS[1], 'i:' .. id)
    local ok, st = false, nil
    if raw then ok, st = pcall(cjson.decode, raw) end
    if ok and type(st) == 'table' then
      local old, old_currency = price_of(st.p), text(st.c)
      local change, pct = compare(st, price, currency)
      local moved = change ~= nil
      if change == 'rebase' then change = nil end
      if type(st.r) == 'number' and st.r < run - 1 then change = 'back' end
      if change then
        local seq = redis.call('INCR', KEYS[4])
        local fields = {'site', ARGV[1], 'id', id, 'change', change,
          'old_price', old and old[2] or '', 'new_price', price and price[2] or '',
          'change_pct', pct and string.format('%.1f', pct) or '', 'currency', currency,
          'old_currency', old_currency, 'fields', text(item[4]), 'at', tostring(now),
          'seq', tostring(seq), 'schema', ARGV[7]}
        redis.call('XADD', KEYS[3], '*', unpack(fields))
        written = written + 1
        sizes[written] = budget_bytes(fields)
      end
      if price and (moved or change or not old) then st.p = price[2] end
      if not old and not price then st.p = cjson.null end
    else
      st = {p = price and price[2] or cjson.null}
    end
    if currency ~= '' then st.c = currency end
    st.r = run
    redis.call('HSET', KEYS[1], 'i:' .. id, cjson.encode(st))
    redis.call('ZADD', KEYS[2], now, id)
  end
end

if written > 0 then
  budget_add(KEYS[3], KEYS[5], sizes, tonumber(ARGV[6]), tonumber(ARGV[11]))
end

local function forget(ids)
  for _, id in ipairs(ids) do redis.call('HDEL', KEYS[1], 'i:' .. id) end
end
if max_age > 0 then
  local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - max_age))
  if #old > 0 then
    forget(old)
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - max_age))
  end
end
local n = redis.call('ZCARD', KEYS[2])
if n > cap then
  forget(redis.call('ZRANGE', KEYS[2], 0, n - cap - 1))
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, n - cap - 1)
end
if max_age > 0 then
  redis.call('EXPIRE', KEYS[1], max_age)
  redis.call('EXPIRE', KEYS[2], max_age)
end
return {written, redis.call('ZCARD', KEYS[2]), refused}
