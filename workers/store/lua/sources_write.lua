-- sources_write: one owner's change to the source registry, checked whole, then written whole.
--
-- Every definition was validated by the caller (the sources file's readers); this call checks
-- what only Redis knows — who owns each name, and the cap — and writes nothing unless every
-- check passes. All changes of one call share one revision; each changed name goes into the
-- change log with it, and the log is trimmed to its cap here (the newest revision trimmed is
-- recorded as `floor`: a process whose revision is below it reloads the whole registry).
--
-- KEYS[1]  definitions (HASH name → JSON)
-- KEYS[2]  change log (ZSET name → revision of its last change)
-- KEYS[3]  meta (HASH rev, floor, epoch)
-- KEYS[4]  owners (HASH owner → number of sources)
-- KEYS[5]  this owner's names (SET)
-- KEYS[6]  file records (HASH owner → JSON of the version applied)
-- ARGV[1]  owner
-- ARGV[2]  most sources the registry may hold
-- ARGV[3]  change log cap
-- ARGV[4]  epoch to record when the registry is new
-- ARGV[5]  file record to store for this owner ("" leaves it)
-- ARGV[6]  "new": every name put must be new; "owned": every name put or removed must exist
--          (owned by this owner); "owned@<sha1>": so too, and each must still be the version
--          whose redis.sha1hex(epoch .. definition) is <sha1> (an edit of what was read:
--          compare and set; keyed by the epoch so the tag tests no guess at a secret);
--          "": puts create or update, absent removals are skipped
-- ARGV[7]  n, the number of definitions put
-- ARGV[8 .. 7+2n]  name, definition JSON pairs
-- ARGV[8+2n ..]    names removed
-- Returns  {"ok", revision, added, changed, removed} (the revision unchanged when nothing was),
--          or a refusal with nothing written: {"owned", name, its owner}, {"exists", name,
--          its owner}, {"missing", name}, {"cap", size now, size after, cap}, {"stale", name}

local defs, log, meta, owners, owned, files = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local owner, cap, log_cap = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local mode, n = ARGV[6], tonumber(ARGV[7])
local expect = string.match(mode, '^owned@(%x+)$')
local salt = ''
if expect then
  mode = 'owned'
  salt = redis.call('HGET', meta, 'epoch') or ''
end
local first_removal = 8 + 2 * n

local function owner_of(raw)
  local ok, decoded = pcall(cjson.decode, raw)
  return (ok and type(decoded) == 'table' and decoded.owner) or '?'
end

-- check everything first
local news, removals, changes = 0, 0, 0
for i = 8, 7 + 2 * n, 2 do
  local name, definition = ARGV[i], ARGV[i + 1]
  local existing = redis.call('HGET', defs, name)
  if existing then
    if redis.call('SISMEMBER', owned, name) == 0 then
      return {'owned', name, owner_of(existing)}
    end
    if mode == 'new' then
      return {'exists', name, owner_of(existing)}
    end
    if expect and redis.sha1hex(salt .. existing) ~= expect then
      return {'stale', name}
    end
    if existing ~= definition then
      changes = changes + 1
    end
  else
    if mode == 'owned' then
      return {'missing', name}
    end
    news = news + 1
  end
end
for i = first_removal, #ARGV do
  local name = ARGV[i]
  local existing = redis.call('HGET', defs, name)
  if existing then
    if redis.call('SISMEMBER', owned, name) == 0 then
      return {'owned', name, owner_of(existing)}
    end
    if expect and redis.sha1hex(salt .. existing) ~= expect then
      return {'stale', name}
    end
    removals = removals + 1
  elseif mode == 'owned' then
    return {'missing', name}
  end
end
local size = redis.call('HLEN', defs)
if news > 0 and size - removals + news > cap then
  return {'cap', size, size - removals + news, cap}
end

-- then write
if redis.call('HEXISTS', meta, 'epoch') == 0 then
  redis.call('HSET', meta, 'epoch', ARGV[4], 'rev', 0, 'floor', 0)
end
local rev = tonumber(redis.call('HGET', meta, 'rev')) or 0
if news + changes + removals > 0 then
  rev = redis.call('HINCRBY', meta, 'rev', 1)
  for i = 8, 7 + 2 * n, 2 do
    local name, definition = ARGV[i], ARGV[i + 1]
    if redis.call('HGET', defs, name) ~= definition then
      redis.call('HSET', defs, name, definition)
      redis.call('ZADD', log, rev, name)
      if redis.call('SADD', owned, name) == 1 then
        redis.call('HINCRBY', owners, owner, 1)
      end
    end
  end
  for i = first_removal, #ARGV do
    local name = ARGV[i]
    if redis.call('HDEL', defs, name) == 1 then
      redis.call('SREM', owned, name)
      redis.call('ZADD', log, rev, name)
      redis.call('HINCRBY', owners, owner, -1)
    end
  end
  local logged = redis.call('ZCARD', log)
  if logged > log_cap then
    local last = logged - log_cap - 1
    local trimmed = redis.call('ZRANGE', log, last, last, 'WITHSCORES')
    redis.call('ZREMRANGEBYRANK', log, 0, last)
    redis.call('HSET', meta, 'floor', trimmed[2])
  end
end
if (tonumber(redis.call('HGET', owners, owner)) or 0) <= 0 then
  redis.call('HDEL', owners, owner)
  redis.call('HDEL', files, owner)
elseif ARGV[5] ~= '' then
  redis.call('HSET', files, owner, ARGV[5])
end
return {'ok', rev, news, changes, removals}
