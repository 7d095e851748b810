-- health: record a source's health after a poll; on a change of state, one `health` entry.
--
-- A source goes "down" when its consecutive errors reach the threshold and it was not down
-- already; it comes back "up" on its first success after that. Anything else changes nothing,
-- so a source failing for a week yields exactly one "down" entry, never a storm. The hash holds
-- only sources currently down (a recovery deletes the field).
--
-- KEYS[1]  sources down (HASH source -> JSON {since, errors, error})
-- KEYS[2]  the health stream
-- KEYS[3]  its seq counter
-- KEYS[4]  its byte ledger (STRING, workers/store/lua/lib/stream_budget.lua)
-- ARGV[1]  source name
-- ARGV[2]  source kind
-- ARGV[3]  consecutive errors after this poll
-- ARGV[4]  threshold (WATCHKEEPER_NOTIFY_AFTER_ERRORS)
-- ARGV[5]  last error (already redacted and shortened)
-- ARGV[6]  stream cap: entries kept
-- ARGV[7]  schema version
-- ARGV[8]  stream byte budget: bytes kept
-- Returns  "down", "up" or "" (no change)

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local source, errors, threshold = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4])
local down = redis.call('HGET', KEYS[1], source)
local state, title, message, since
if errors >= threshold and not down then
  state, since = 'down', now
  redis.call('HSET', KEYS[1], source, cjson.encode({since = now, errors = errors, error = ARGV[5]}))
  title = 'Source ' .. source .. ' is down'
  message = source .. ': ' .. errors .. ' consecutive errors; last: ' .. ARGV[5]
elseif errors == 0 and down then
  state = 'up'
  since = tonumber(cjson.decode(down).since) or now
  redis.call('HDEL', KEYS[1], source)
  title = 'Source ' .. source .. ' recovered'
  message = source .. ' is polling again after ' .. math.floor(now - since + 0.5) .. ' s down'
else
  return ''
end
local seq = redis.call('INCR', KEYS[3])
local fields = {'source', source, 'kind', ARGV[2], 'state', state, 'errors', tostring(errors),
  'last_error', ARGV[5], 'since', tostring(since), 'at', tostring(now),
  'title', title, 'message', message, 'seq', tostring(seq), 'schema', ARGV[7]}
redis.call('XADD', KEYS[2], '*', unpack(fields))
local size = budget_bytes(fields)
budget_add(KEYS[2], KEYS[4], {size}, tonumber(ARGV[6]), tonumber(ARGV[8]))
return state
