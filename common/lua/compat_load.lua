-- compat_load: read one session from whichever layout holds it, legacy first, in one call.
-- Single-node servers only (a script may read keys of several slots there); on Cluster the
-- caller pipelines legacy_load and hashidx_load instead.
-- KEYS[1] sess:{app}:<user>  KEYS[2] event:{app}:<user>:<sid>  KEYS[3] sesssum:{app}:<user>
-- KEYS[4] userstate:{app}:<user>  KEYS[5] trackidx:{app}:<user>:<sid>  KEYS[6] appstate:{app}
-- KEYS[7] meta  KEYS[8] evtdata  KEYS[9] evtidx:time  KEYS[10] hashidx sesssum
-- KEYS[11] hashidx userstate  KEYS[12] trkidx:names
-- ARGV[1] session id  ARGV[2] limit (0 = every event)  ARGV[3] lowest timestamp ns ('' none)
-- ARGV[4] 'x' for the exact window (no earlier user message looked up), else ''
-- ARGV[5] 'i' to return the ids of a HashIdx window too (a 10th element), else ''
-- Returns {route 'zset'|'hashidx'|false, document|false, summary|false,
--          {old user state field, value, ...}, {HashIdx user state field, value, ...},
--          {track names}, {event JSON of the window}, earlier user message JSON|false,
--          {app state field, value, ...}, {the HashIdx window's ids, oldest first (ARGV[5]
--          'i', HashIdx route only)}}. Reads only; never touches a TTL.

local sid, limit, after, exact = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4] == 'x'
local old_user = redis.call('HGETALL', KEYS[4])
local new_user = redis.call('HGETALL', KEYS[11])
local app = redis.call('HGETALL', KEYS[6])
local doc = redis.call('HGET', KEYS[1], sid)
if doc then
  local events, prepend = ss_window_z(KEYS[2], limit, after, exact)
  return {'zset', doc, redis.call('HGET', KEYS[3], sid), old_user, new_user,
          redis.call('SMEMBERS', KEYS[5]), events, prepend, app}
end
local meta = redis.call('GET', KEYS[7])
if not meta then
  return {false, false, false, old_user, new_user, {}, {}, false, app}
end
local events, prepend, ids = ss_window_h(KEYS[8], KEYS[9], limit, after, exact)
if ARGV[5] ~= 'i' then
  ids = {}
end
return {'hashidx', meta, redis.call('GET', KEYS[10]), old_user, new_user,
        redis.call('SMEMBERS', KEYS[12]), events, prepend, app, ids}
