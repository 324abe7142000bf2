-- legacy_track: append one track event to a legacy (ZSet layout) session.
-- KEYS[1] sess:{app}:<user>  KEYS[2] track:{app}:<user>:<sid>:<track> (ZSET of track JSON)
-- KEYS[3] trackidx:{app}:<user>:<sid> (SET)  KEYS[4] ss:applied  KEYS[5] ss:info
-- ARGV[1] session id  ARGV[2] rid  ARGV[3] track event JSON  ARGV[4] timestamp ns
-- ARGV[5] track ttl seconds  ARGV[6] '1' to PERSIST the track keys (track ttl set <= 0)
-- ARGV[7] track name  ARGV[8] producer time text ('' = none)  ARGV[9] session ttl ms
-- ARGV[10] incarnation ('' = not checked)  ARGV[11] ttl ms for an outcome on a missing session
-- Returns applied | duplicate | session_gone | superseded | migrated | invalid:<why>.
-- The track name is merged into the stored state["tracks"]; the sess HASH gets the session
-- TTL (as the Go service). An identical track member already stored is kept where it is.

local sess_key, track_key, names_key, applied_key, info_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local sid, rid, track = ARGV[1], ARGV[2], ARGV[7]
local ttl_ms = tonumber(ARGV[9])
local bad = ss_check_types({sess_key, 'hash', track_key, 'zset', names_key, 'set',
  applied_key, 'zset', info_key, 'hash'})
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
  ss_pexpire(applied_key, tonumber(ARGV[11]))
  return 'session_gone'
end
local doc, why = ss_decode_doc(raw)
if not doc then
  return why
end
if ARGV[10] ~= '' and ss_incarnation(doc) ~= ARGV[10] then
  ss_record(applied_key, rid, SS_CODE.superseded)
  return 'superseded'
end
local merged = ss_merge_track(doc['state']['tracks'], track)
if not merged then
  return 'invalid:state tracks is not a base64 JSON list'
end

redis.call('ZADD', track_key, 'NX', ss_fmt_score(ss_free_score(track_key, tonumber(ARGV[4]))), ARGV[3])
redis.call('SADD', names_key, track)
local dirty = false
if merged ~= doc['state']['tracks'] then
  doc['state']['tracks'] = merged
  dirty = true
end
if ARGV[8] ~= '' and ss_time_after(ARGV[8], doc['updatedAt']) then
  doc['updatedAt'] = ARGV[8]
  dirty = true
end
if dirty then
  redis.call('HSET', sess_key, sid, cjson.encode(doc))
end
ss_pexpire(sess_key, ttl_ms)
local track_ttl = tonumber(ARGV[5])
for _, k in ipairs({track_key, names_key}) do
  if track_ttl > 0 then
    redis.call('EXPIRE', k, track_ttl)
  elseif ARGV[6] == '1' then
    redis.call('PERSIST', k)
  end
end
ss_record(applied_key, rid, SS_CODE.applied)
ss_keep(applied_key, ttl_ms)
ss_record_cap(applied_key)
return 'applied'
