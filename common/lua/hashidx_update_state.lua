-- hashidx_update_state: merge a patch into a HashIdx session's state.
-- KEYS[1] meta  KEYS[2] ss:applied  KEYS[3] hashidx:sesssum  KEYS[4] ss:summary (their TTL
-- follows the session's: refreshed with it, never created; ours always expire)
-- ARGV[1] rid  ARGV[2] patch JSON (values base64 or null)  ARGV[3] producer time text
-- ARGV[4] session ttl ms (0 = keep the TTL)  ARGV[5] incarnation ('' = not checked)
-- ARGV[6] ttl ms for an outcome recorded on a missing session
-- Returns applied | duplicate | session_gone | superseded | invalid:<why>.

local meta_key, applied_key, rid = KEYS[1], KEYS[2], ARGV[1]
local bad = ss_check_types({meta_key, 'string', applied_key, 'zset'})
if bad then
  return bad
end
if ss_recorded(applied_key, rid) then
  return 'duplicate'
end
local raw = redis.call('GET', meta_key)
if not raw then
  ss_record(applied_key, rid, SS_CODE.session_gone)
  ss_pexpire(applied_key, tonumber(ARGV[6]))
  return 'session_gone'
end
local meta, why = ss_decode_doc(raw)
if not meta then
  return why
end
local ok, patch = pcall(cjson.decode, ARGV[2])
if not ok or type(patch) ~= 'table' then
  return 'invalid:state patch is not a JSON object'
end
if ARGV[5] ~= '' and ss_incarnation(meta) ~= ARGV[5] then
  ss_record(applied_key, rid, SS_CODE.superseded)
  return 'superseded'
end
for k, v in pairs(patch) do
  meta['state'][k] = v
end
if ss_time_after(ARGV[3], meta['updatedAt']) then
  meta['updatedAt'] = ARGV[3]
end
local ttl_ms = tonumber(ARGV[4])
if ttl_ms > 0 then
  redis.call('SET', meta_key, cjson.encode(meta), 'PX', ttl_ms)
else
  redis.call('SET', meta_key, cjson.encode(meta), 'KEEPTTL')
end
ss_record(applied_key, rid, SS_CODE.applied)
ss_keep(applied_key, ttl_ms)
ss_pexpire(KEYS[3], ttl_ms)
ss_keep(KEYS[4], ttl_ms)
ss_record_cap(applied_key)
return 'applied'
