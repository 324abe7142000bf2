-- legacy_update_state: merge a patch into a legacy session's state.
-- KEYS[1] sess:{app}:<user>  KEYS[2] ss:applied  KEYS[3] ss:info  KEYS[4] sesssum:{app}:<user>
-- KEYS[5] ss:summary (their TTL follows the session's: refreshed with it, never created; ours
-- always expire)
-- ARGV[1] session id  ARGV[2] rid  ARGV[3] patch JSON (values base64 or null)
-- ARGV[4] producer time text  ARGV[5] session ttl ms (0 = keep)  ARGV[6] incarnation
-- ('' = not checked)  ARGV[7] ttl ms for an outcome recorded on a missing session
-- Returns applied | duplicate | session_gone | superseded | migrated | invalid:<why>.

local sess_key, applied_key, info_key = KEYS[1], KEYS[2], KEYS[3]
local sid, rid = ARGV[1], ARGV[2]
local ttl_ms = tonumber(ARGV[5])
local bad = ss_check_types({sess_key, 'hash', applied_key, 'zset', info_key, 'hash'})
if bad then
  return bad
end
if ss_recorded(applied_key, rid) then
  return 'duplicate'
end
local raw = redis.call('HGET', sess_key, sid)
if not raw then
  if redis.call('HEXISTS', info_key, 'migrated') == 1 then
    ss_keep(info_key, ttl_ms)
    return 'migrated'
  end
  ss_record(applied_key, rid, SS_CODE.session_gone)
  ss_pexpire(applied_key, tonumber(ARGV[7]))
  return 'session_gone'
end
local doc, why = ss_decode_doc(raw)
if not doc then
  return why
end
local ok, patch = pcall(cjson.decode, ARGV[3])
if not ok or type(patch) ~= 'table' then
  return 'invalid:state patch is not a JSON object'
end
if ARGV[6] ~= '' and ss_incarnation(doc) ~= ARGV[6] then
  ss_record(applied_key, rid, SS_CODE.superseded)
  return 'superseded'
end
for k, v in pairs(patch) do
  doc['state'][k] = v
end
if ss_time_after(ARGV[4], doc['updatedAt']) then
  doc['updatedAt'] = ARGV[4]
end
redis.call('HSET', sess_key, sid, cjson.encode(doc))
ss_pexpire(sess_key, ttl_ms)
ss_record(applied_key, rid, SS_CODE.applied)
ss_keep(applied_key, ttl_ms)
ss_pexpire(KEYS[4], ttl_ms)
ss_keep(KEYS[5], ttl_ms)
ss_record_cap(applied_key)
return 'applied'
