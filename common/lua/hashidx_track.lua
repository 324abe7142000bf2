-- hashidx_track: append one track event to a HashIdx session.
-- KEYS[1] meta  KEYS[2] trkdata  KEYS[3] trkidx:time  KEYS[4] trkidx:names  KEYS[5] ss:applied
-- ARGV[1] rid  ARGV[2] track event JSON  ARGV[3] timestamp ns  ARGV[4] track ttl seconds
-- ARGV[5] '1' to PERSIST the track keys (track ttl explicitly <= 0)  ARGV[6] track name
-- ARGV[7] producer time text ('' = none)  ARGV[8] session ttl ms (for the request record)
-- ARGV[9] incarnation ('' = not checked)  ARGV[10] ttl ms for an outcome on a missing session
-- Returns applied | duplicate | session_gone | superseded | invalid:<why>.
-- The track name is merged into state["tracks"]; the meta keeps its TTL (as the Go service).

local meta_key, data_key, idx_key, names_key, applied_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local rid, track = ARGV[1], ARGV[6]
local bad = ss_check_types({meta_key, 'string', data_key, 'hash', idx_key, 'zset',
  names_key, 'set', applied_key, 'zset'})
if bad then
  return bad
end
if ss_recorded(applied_key, rid) then
  return 'duplicate'
end
local raw = redis.call('GET', meta_key)
if not raw then
  ss_record(applied_key, rid, SS_CODE.session_gone)
  ss_pexpire(applied_key, tonumber(ARGV[10]))
  return 'session_gone'
end
local meta, why = ss_decode_doc(raw)
if not meta then
  return why
end
if ARGV[9] ~= '' and ss_incarnation(meta) ~= ARGV[9] then
  ss_record(applied_key, rid, SS_CODE.superseded)
  return 'superseded'
end
local merged = ss_merge_track(meta['state']['tracks'], track)
if not merged then
  return 'invalid:state tracks is not a base64 JSON list'
end

local seq = redis.call('HINCRBY', data_key, '_seq', 1)
redis.call('HSET', data_key, tostring(seq), ARGV[2])
redis.call('ZADD', idx_key, ss_fmt_score(ss_free_score(idx_key, tonumber(ARGV[3]))), tostring(seq))
redis.call('SADD', names_key, track)
local dirty = false
if merged ~= meta['state']['tracks'] then
  meta['state']['tracks'] = merged
  dirty = true
end
if ARGV[7] ~= '' and ss_time_after(ARGV[7], meta['updatedAt']) then
  meta['updatedAt'] = ARGV[7]
  dirty = true
end
if dirty then
  redis.call('SET', meta_key, cjson.encode(meta), 'KEEPTTL')
end
local track_ttl = tonumber(ARGV[4])
for _, k in ipairs({data_key, idx_key, names_key}) do
  if track_ttl > 0 then
    redis.call('EXPIRE', k, track_ttl)
  elseif ARGV[5] == '1' then
    redis.call('PERSIST', k)
  end
end
ss_record(applied_key, rid, SS_CODE.applied)
ss_keep(applied_key, tonumber(ARGV[8]))
ss_record_cap(applied_key)
return 'applied'
