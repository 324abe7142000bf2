-- hashidx_summary_cas: replace a HashIdx session's summary map if nobody changed it meanwhile.
-- KEYS[1] hashidx:sesssum (STRING: JSON map filter key -> summary)  KEYS[2] hashidx:meta
-- KEYS[3] ss:summary (HASH: our summary-run record, field 'c:<filter key>' = the cut of the
-- stored summary)
-- ARGV[1] '1' when a stored map was read, '0' when none was  ARGV[2] the map read (compared
-- byte for byte)  ARGV[3] the new map JSON  ARGV[4] the filter key written
-- ARGV[5] the cut the summary covers ('' = none: neither checked nor recorded)
-- Returns applied | retry (the map changed: read again) | session_gone | covered (a summary
-- covering this cut or a later one is stored already) | invalid:<why>.
-- The caller decides "newer" on parsed times and encodes the map the way Go does. The summary
-- key and the record take the meta's remaining TTL: the summary lives as long as the session
-- (the record, ours, 7 days after this write when the meta has no TTL).

local sum_key, meta_key, run_key = KEYS[1], KEYS[2], KEYS[3]
local bad = ss_check_types({sum_key, 'string', meta_key, 'string', run_key, 'hash'})
if bad then
  return bad
end
if redis.call('EXISTS', meta_key) == 0 then
  return 'session_gone'
end
local field, cut = 'c:' .. ARGV[4], ARGV[5]
if cut ~= '' then
  local stored = redis.call('HGET', run_key, field)
  if stored and ss_id_cmp(stored, cut) >= 0 then
    return 'covered'
  end
end
local cur = redis.call('GET', sum_key)
if (ARGV[1] == '1') ~= (cur ~= false) or (cur and cur ~= ARGV[2]) then
  return 'retry'
end
redis.call('SET', sum_key, ARGV[3])
ss_follow_ttl(sum_key, meta_key, 0)
if cut ~= '' then
  redis.call('HSET', run_key, field, cut)
  ss_follow_keep(run_key, meta_key, 0)
end
return 'applied'
