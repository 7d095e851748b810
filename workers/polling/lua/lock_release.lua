-- lock_release: release a lock only if this caller still holds it.
--
-- KEYS[1]  the lock (STRING token, SET NX PX)
-- ARGV[1]  the caller's token
-- Returns  1 when released, 0 when the lock had expired or belongs to someone else

if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
