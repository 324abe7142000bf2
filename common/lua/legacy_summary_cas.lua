-- legacy_summary_cas: replace a legacy session's summary map if nobody changed it meanwhile.
-- KEYS[1] sesssum:{app}:<user> (HASH sid -> JSON map filter key -> summary)  KEYS[2] sess:{app}:<user>
-- KEYS[3] (optional) ss:summary:{app}:<user>:<sid> (HASH: our summary-run record, field
-- 'c:<filter key>' = the cut of the stored summary)
-- ARGV[1] session id  ARGV[2] '1' when a stored map was read, '0' when none was
-- ARGV[3] the map read (compared byte for byte)  ARGV[4] the new map JSON
-- ARGV[5] session ttl ms (0 = none configured)  ARGV[6] the filter key written
-- ARGV[7] the cut the summary covers ('' or absent = none: neither checked nor recorded)
-- Returns applied | retry (the map changed: read again) | session_gone | covered (a summary
-- covering this cut or a later one is stored already) | invalid:<why>.
-- The caller decides "newer" on parsed times and encodes the map the way Go does. The summary
-- HASH follows the session HASH's TTL (at least ARGV[5]; none when the session HASH has none).

local bad = ss_check_types({KEYS[1], 'hash', KEYS[2], 'hash', KEYS[3] or KEYS[2], 'hash'})
if bad then
  return bad
end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then
  return 'session_gone'
end
local cut = ARGV[7] or ''
local field = 'c:' .. (ARGV[6] or '')
if cut ~= '' and KEYS[3] then
  local stored = redis.call('HGET', KEYS[3], field)
  if stored and ss_id_cmp(stored, cut) >= 0 then
    return 'covered'
  end
end
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if (ARGV[2] == '1') ~= (cur ~= false) or (cur and cur ~= ARGV[3]) then
  return 'retry'
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
ss_follow_ttl(KEYS[1], KEYS[2], tonumber(ARGV[5]))
if cut ~= '' and KEYS[3] then
  redis.call('HSET', KEYS[3], field, cut)
  ss_follow_keep(KEYS[3], KEYS[2], tonumber(ARGV[5]))
end
return 'applied'
