-- legacy_summary_cas: replace a legacy session's summary map if nobody changed it meanwhile.
-- KEYS[1] sesssum:{app}:<user> (HASH sid -> JSON map filter key -> summary)  KEYS[2] sess:{app}:<user>
-- ARGV[1] session id  ARGV[2] '1' when a stored map was read, '0' when none was
-- ARGV[3] the map read (compared byte for byte)  ARGV[4] the new map JSON
-- ARGV[5] session ttl ms (0 = keep): the summary TTL follows the session TTL
-- Returns applied | retry (the map changed: read again) | session_gone | invalid:<why>.
-- The caller decides "newer" on parsed times and encodes the map the way Go does.

local bad = ss_check_types({KEYS[1], 'hash', KEYS[2], 'hash'})
if bad then
  return bad
end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then
  return 'session_gone'
end
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if (ARGV[2] == '1') ~= (cur ~= false) or (cur and cur ~= ARGV[3]) then
  return 'retry'
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
ss_pexpire(KEYS[1], tonumber(ARGV[5]))
return 'applied'
