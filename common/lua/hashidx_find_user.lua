-- hashidx_find_user: the newest user message stored before a given event.
-- KEYS[1] evtdata  KEYS[2] evtidx:time
-- ARGV[1] event id of the window's first event
-- Returns the event JSON, or false. Used when a window only looked like it held a user message.

local rank = redis.call('ZRANK', KEYS[2], ARGV[1])
if not rank then
  return false
end
local _, _, json = ss_find_user(KEYS[1], KEYS[2], rank - 1, 0)
return json or false
