-- stream_add: append many entries to a capped stream in one call, each with `seq` and
-- `schema`, then trim it to its entry cap and byte budget (lib/stream_budget.lua).
--
-- redis-py packs every argument of every command in Python (an alert's XADD is ~25
-- arguments); one JSON argument per batch is about 5x cheaper for the client.
--
-- KEYS[1]  the stream
-- KEYS[2]  the stream's sequence counter (STRING)
-- KEYS[3]  the stream's byte ledger (STRING, lib/stream_budget.lua)
-- ARGV[1]  cap: entries kept
-- ARGV[2]  JSON [[field, value, ...], ...]
-- ARGV[3]  stream schema version
-- ARGV[4]  byte budget: bytes kept
-- Returns  the new entries' ids, in order

local ids, sizes = {}, {}
local rows = cjson.decode(ARGV[2])
local last = redis.call('INCRBY', KEYS[2], #rows)
for i = 1, #rows do
  local fields = rows[i]
  local seq = last - #rows + i
  sizes[i] = budget_bytes(fields) + 9 + budget_digits(seq) + #ARGV[3]
  fields[#fields + 1] = 'seq'
  fields[#fields + 1] = seq
  fields[#fields + 1] = 'schema'
  fields[#fields + 1] = ARGV[3]
  ids[i] = redis.call('XADD', KEYS[1], '*', unpack(fields))
end
if #rows > 0 then
  budget_add(KEYS[1], KEYS[3], sizes, tonumber(ARGV[1]), tonumber(ARGV[4]))
end
return ids
