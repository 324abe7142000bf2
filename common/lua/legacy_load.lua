-- legacy_load: read one legacy session: SessionState, an event window, summary, user state,
-- track names and app state (every key shares the {app} tag, so one script reads them all).
-- KEYS[1] sess:{app}:<user>  KEYS[2] event:{app}:<user>:<sid>  KEYS[3] sesssum:{app}:<user>
-- KEYS[4] userstate:{app}:<user>  KEYS[5] trackidx:{app}:<user>:<sid>  KEYS[6] appstate:{app}
-- ARGV[1] session id  ARGV[2] limit (0 = every event)  ARGV[3] lowest timestamp ns ('' = none)
-- ARGV[4] flags: 'e' events, 's' summary, 'u' user state, 't' track names, 'a' app state,
--          'x' exact window (no earlier user message looked up)
-- Returns {doc|false, summary|false, {user state field, value, ...}, {track names},
--          {event JSON of the window, oldest first}, newest earlier user message JSON|false,
--          {app state field, value, ...}} (the shape of hashidx_load). User and app state come
-- back even when the session is missing. Reads only; never touches a TTL.

local flags = ARGV[4]
local function want(f)
  return string.find(flags, f, 1, true) ~= nil
end
local ustate, astate = {}, {}
if want('u') then
  ustate = redis.call('HGETALL', KEYS[4])
end
if want('a') then
  astate = redis.call('HGETALL', KEYS[6])
end
local doc = redis.call('HGET', KEYS[1], ARGV[1])
if not doc then
  return {false, false, ustate, {}, {}, false, astate}
end
local limit = tonumber(ARGV[2])
local after = ARGV[3]
local summary, names, events, prepend = false, {}, {}, false
if want('s') then
  summary = redis.call('HGET', KEYS[3], ARGV[1])
end
if want('t') then
  names = redis.call('SMEMBERS', KEYS[5])
end
if want('e') then
  events, prepend = ss_window_z(KEYS[2], limit, after, want('x'))
end
return {doc, summary, ustate, names, events, prepend, astate}
