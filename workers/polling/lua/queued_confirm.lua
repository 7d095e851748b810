-- queued_confirm: give the markers of sent messages their full age bound.
--
-- A marker is set with a short TTL in the same step that chooses its entry (dispatch.lua), so
-- a beat dying before it sends the message blocks the entry only briefly; once the message is
-- in the queue its marker lives as long as the message may wait there. A marker already
-- cleared (the task started) or replaced is left alone.
--
-- KEYS[i]      the markers of the messages sent
-- ARGV[2i-1]   the task id marker i must still hold
-- ARGV[2i]     its TTL (seconds): its message's `expires`
-- Returns      how many markers were extended

local extended = 0
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[2 * i - 1] then
    redis.call('EXPIRE', key, ARGV[2 * i])
    extended = extended + 1
  end
end
return extended
