-- legacy_find_user: the newest user message stored before a given event of a legacy session.
-- KEYS[1] event:{app}:<user>:<sid>
-- ARGV[1] JSON member of the window's first event
-- Returns the event JSON, or false.

local rank = redis.call('ZRANK', KEYS[1], ARGV[1])
if not rank then
  return false
end
local json = ss_find_user_z(KEYS[1], rank - 1, 0)
return json or false
