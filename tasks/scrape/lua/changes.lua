-- changes: remember each listing's price and presence; write what changed to `changes`.
--
-- Called with every listing of a scrape run (not only new ones). Per listing id the site keeps
-- the last reported price (its baseline), currency and the last complete run it was seen in.
-- A price that moved from its baseline by at least the site's threshold down (drop) or up
-- (rise) is a change, and becomes the new baseline (so a slow slide is reported once it adds
-- up); a listing absent from at least one complete run and seen again is "back". Each change
-- is one entry on the capped `changes` stream, stamped with the stream's next `seq`. The memory
-- is bounded like a seen-set: an exact cap on ids (least recently seen evicted) and an age.
--
-- KEYS[1]  price memory (HASH "i:<id>" -> JSON {p, c, r}; "run" -> complete runs so far)
-- KEYS[2]  seen index (ZSET id -> last seen)
-- KEYS[3]  the changes stream
-- KEYS[4]  its seq counter
-- ARGV[1]  site name
-- ARGV[2]  drop threshold, percent ("" = drops not reported)
-- ARGV[3]  rise threshold, percent ("" = rises not reported)
-- ARGV[4]  cap: ids kept, exactly
-- ARGV[5]  max age: seconds an id not seen again is kept; 0 = no age limit
-- ARGV[6]  stream cap (XADD MAXLEN ~)
-- ARGV[7]  schema version
-- ARGV[8]  "1" when the run read every page (only then does an absence count)
-- ARGV[9]  JSON [[id, price (number or null), currency (or null), fields (JSON text)], ...]
-- Returns  {changes written, ids tracked}

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local drop, rise = tonumber(ARGV[2]), tonumber(ARGV[3])
local cap, max_age = tonumber(ARGV[4]), tonumber(ARGV[5])
local run
if ARGV[8] == '1' then
  run = redis.call('HINCRBY', KEYS[1], 'run', 1)
else
  run = tonumber(redis.call('HGET', KEYS[1], 'run') or '0')
end
local function num(x) if type(x) == 'number' then return x end return nil end
local function text(x) if type(x) == 'string' then return x end return '' end

local written = 0
for _, item in ipairs(cjson.decode(ARGV[9])) do
  local id, price, currency = item[1], num(item[2]), text(item[3])
  local raw = redis.call('HGET', KEYS[1], 'i:' .. id)
  local st
  if raw then
    st = cjson.decode(raw)
    local change, pct = nil, nil
    local old = num(st.p)
    if old and price and old > 0 and (text(st.c) == currency or text(st.c) == '' or currency == '') then
      pct = (price - old) / old * 100
      if drop and pct < 0 and -pct >= drop then change = 'price_drop' end
      if rise and pct > 0 and pct >= rise then change = 'price_rise' end
    end
    if num(st.r) and st.r < run - 1 then change = 'back' end
    if change then
      local seq = redis.call('INCR', KEYS[4])
      redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*',
        'site', ARGV[1], 'id', id, 'change', change,
        'old_price', old and tostring(old) or '', 'new_price', price and tostring(price) or '',
        'change_pct', pct and string.format('%.1f', pct) or '', 'currency', currency,
        'fields', text(item[4]), 'at', tostring(now), 'seq', tostring(seq), 'schema', ARGV[7])
      written = written + 1
      if price then st.p = price end
    end
    if not num(st.p) and price then st.p = price end
  else
    st = {p = price or cjson.null}
  end
  st.c = currency
  st.r = run
  redis.call('HSET', KEYS[1], 'i:' .. id, cjson.encode(st))
  redis.call('ZADD', KEYS[2], now, id)
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
return {written, redis.call('ZCARD', KEYS[2])}
