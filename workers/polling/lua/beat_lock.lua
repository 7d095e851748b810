-- beat_lock: take or keep the dispatch lock; only its holder dispatches.
--
-- Called by every beat once per pass: the holder refreshes its lock, a standby takes it when
-- it has expired (its holder died or stalled longer than the TTL).
--
-- KEYS[1]  the dispatch lock (STRING holder id)
-- ARGV[1]  this beat's id
-- ARGV[2]  lock TTL (ms)
-- Returns  {1 if this beat holds the lock now else 0, the holder's id}

local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, holder}
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1, ARGV[1]}
end
return {0, holder}
