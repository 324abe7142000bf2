-- legacy_retire: remove a migrated session from the legacy layout if it did not change.
-- KEYS[1] sess:{app}:<user>  KEYS[2] sesssum:{app}:<user>  KEYS[3] event  KEYS[4] trackidx
-- KEYS[5] ss:applied  KEYS[6] ss:info, then one track ZSET per exported track
-- ARGV[1] session id  ARGV[2] the SessionState JSON exported  ARGV[3] '1' when a summary map
-- was exported  ARGV[4] that map  ARGV[5] event count exported  ARGV[6] request record size
-- ARGV[7] newest request id ('' = none)  ARGV[8] incarnation  ARGV[9] ttl ms of the mark
-- (0 = none), then one exported event count per track key
-- Returns retired | changed (a write landed since the export: nothing removed) | gone.
-- On retire, ss:info keeps only `migrated` = incarnation: later writes routed to the legacy
-- layout (tags held by running agents, entries in flight) go to the HashIdx copy.

local bad = ss_check_types({KEYS[1], 'hash', KEYS[2], 'hash', KEYS[3], 'zset', KEYS[4], 'set',
  KEYS[5], 'zset', KEYS[6], 'hash'})
if bad then
  return bad
end
local sid = ARGV[1]
local doc = redis.call('HGET', KEYS[1], sid)
if not doc then
  return 'gone'
end
local sum = redis.call('HGET', KEYS[2], sid)
local top = redis.call('ZREVRANGE', KEYS[5], 0, 0)[1] or ''
if doc ~= ARGV[2] or (ARGV[3] == '1') ~= (sum ~= false) or (sum and sum ~= ARGV[4])
    or redis.call('ZCARD', KEYS[3]) ~= tonumber(ARGV[5])
    or redis.call('ZCARD', KEYS[5]) ~= tonumber(ARGV[6]) or top ~= ARGV[7] then
  return 'changed'
end
for i = 7, #KEYS do
  if redis.call('ZCARD', KEYS[i]) ~= tonumber(ARGV[i + 3]) then
    return 'changed'
  end
end
redis.call('HDEL', KEYS[1], sid)
redis.call('HDEL', KEYS[2], sid)
for i = 3, #KEYS do
  redis.call('DEL', KEYS[i])
end
redis.call('HSET', KEYS[6], 'migrated', ARGV[8])
ss_keep(KEYS[6], tonumber(ARGV[9]))
return 'retired'
