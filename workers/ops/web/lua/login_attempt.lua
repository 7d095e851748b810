-- login_attempt: count one sign-in attempt of a client, unless it has used up its window's.
--
-- The counter starts at the client's first attempt and expires a window later; it never goes
-- above the limit (a refused attempt is not counted), so the key stays one small integer.
-- With ARGV[3] = 0 the attempt is only looked at, not counted (a right bearer token: refused
-- while the client is throttled, like a right sign-in, but never itself using up the window).
--
-- KEYS[1]  the client's counter (STRING)
-- ARGV[1]  attempts allowed per window
-- ARGV[2]  the window (seconds)
-- ARGV[3]  1: count the attempt; 0: only check (optional, default 1)
-- Returns  {1, 0}: the attempt may go ahead (counted when asked); {0, ms}: refused for another ms

local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if count >= tonumber(ARGV[1]) then
  local left = redis.call('PTTL', KEYS[1])
  if left < 0 then  -- never left without an age
    redis.call('EXPIRE', KEYS[1], ARGV[2])
    left = tonumber(ARGV[2]) * 1000
  end
  return {0, left}
end
if ARGV[3] == '0' then
  return {1, 0}
end
redis.call('INCR', KEYS[1])
if redis.call('TTL', KEYS[1]) < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return {1, 0}
