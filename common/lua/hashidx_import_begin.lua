-- hashidx_import_begin: make room for a session imported from the legacy layout (migrate).
-- KEYS[1] meta  KEYS[2] evtidx:time  KEYS[3] trkidx:names  KEYS[4] ss:info (all {user} tag),
-- then every key to clear before the copy (evtdata, evtidx, sesssum, ss:applied, track keys)
-- ARGV[1] the legacy session's incarnation (generation, or createdAt)
-- Returns ok | conflict. `conflict` (nothing written): a HashIdx copy exists that this
-- import did not write and that holds events or tracks. A copy left by an earlier run of the
-- import (ss:info imported = incarnation), or one without events and tracks (a create race
-- shadow), is cleared and rewritten. The meta is written last, by hashidx_import_finish.

local bad = ss_check_types({KEYS[1], 'string', KEYS[2], 'zset', KEYS[3], 'set', KEYS[4], 'hash'})
if bad then
  return bad
end
if redis.call('EXISTS', KEYS[1]) == 1 and redis.call('HGET', KEYS[4], 'imported') ~= ARGV[1]
    and (redis.call('ZCARD', KEYS[2]) > 0 or redis.call('SCARD', KEYS[3]) > 0) then
  return 'conflict'
end
for i = 5, #KEYS do
  redis.call('DEL', KEYS[i])
end
redis.call('DEL', KEYS[1], KEYS[3], KEYS[4])
redis.call('HSET', KEYS[4], 'importing', ARGV[1])
ss_keep(KEYS[4], 0)
return 'ok'
