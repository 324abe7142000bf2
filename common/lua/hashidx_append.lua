-- hashidx_append: apply a batch of appends to one HashIdx session, entry by entry.
-- KEYS[1] meta  KEYS[2] evtdata  KEYS[3] evtidx:time  KEYS[4] ss:applied  KEYS[5] ss:info
-- KEYS[6] hashidx:userstate (same {user} tag)  KEYS[7] hashidx:sesssum  KEYS[8] ss:summary
-- (their TTL follows the session's: refreshed with it, never created; ours always expire)
-- Keys a call does not touch may be left off the end: 7 and 8 without a TTL, 6 without
-- user-state pairs, 5 without a TTL and with unbounded storage.
-- ARGV[1] session ttl ms (0 = keep)   ARGV[2] storage limit (0 = never trim)
-- ARGV[3] incarnation ('' = not checked)   ARGV[4] user-state ttl ms   ARGV[5] ttl ms for an
-- outcome recorded on a missing session   ARGV[6] refuse every entry ('stale', nothing written
-- or recorded) when the stored updatedAt is after this time ('' = no check)
-- (TTLs and timestamps are decimal integers: their text goes to commands as it came.)
-- ARGV[7] number of entries, then per entry:
--   rid, event id, event JSON ('' = not stored), timestamp ns, flags ('u' = user message, 'a' = app state
--   written after this script: recorded as held),
--   producer time text ('' = none), session-state delta JSON ('' = none; values base64|null),
--   number of user-state pairs n, then n field/value pairs.
-- Returns one status per entry: applied | duplicate | session_gone | superseded | stale |
-- invalid:<why>.
-- Validation happens before the first write; a recorded rid makes its entry a no-op.

local meta_key, data_key, idx_key, applied_key, info_key, ustate_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local ttl_ms, ttl_text = tonumber(ARGV[1]), ARGV[1]
local limit = tonumber(ARGV[2])
local incarnation = ARGV[3]
local ustate_ttl_ms = tonumber(ARGV[4])
local gone_ttl_ms = tonumber(ARGV[5])
local stale_after = ARGV[6]
local n = tonumber(ARGV[7])

-- Every field an entry gets is in its constructor (count: the index's count at its score,
-- delta_t: its decoded delta), so the table is sized once.
local entries = {}
local no_pairs = {}
local pos = 8
for i = 1, n do
  local np = tonumber(ARGV[pos + 7])
  local e = {rid = ARGV[pos], id = ARGV[pos + 1], json = ARGV[pos + 2], ts = ARGV[pos + 3],
    flags = ARGV[pos + 4], at = ARGV[pos + 5], delta = ARGV[pos + 6], pairs = no_pairs,
    count = false, delta_t = false}
  if np > 0 then
    e.pairs = {unpack(ARGV, pos + 8, pos + 7 + np * 2)}
  end
  pos = pos + 8 + np * 2
  entries[i] = e
end

local out = {}
local function all(status)
  for i = 1, n do
    out[i] = status
  end
  return out
end

-- Keys of the wrong type refuse every entry before anything is written, checked in this order:
-- data, index, record, info (only written when storage is bounded: it holds the trim hint),
-- user state (only when an entry writes it: a broken user state must not block appends that
-- do not touch it). The index and the record are checked by the reads the appends need anyway
-- (the first stored entry's score, the newest record); the meta's type by the GET below.

-- What to return when a read of `key` failed with `reply`: every entry invalid when the key
-- holds another type than `expected`, else that error.
local function refused(key, expected, reply)
  local t = redis.call('TYPE', key)['ok']
  if t == 'none' or t == expected then
    return redis.error_reply(reply['err'])
  end
  return all('invalid:wrong Redis type ' .. t .. ' at ' .. key)
end

local bad = ss_check_types({data_key, 'hash'})
if bad then
  return all(bad)
end
local first_stored = nil
for _, e in ipairs(entries) do
  if e.json ~= '' then
    first_stored = e
    break
  end
end
if first_stored then
  local count = redis.pcall('ZCOUNT', idx_key, first_stored.ts, first_stored.ts)
  if type(count) == 'table' then
    return refused(idx_key, 'zset', count)
  end
  first_stored.count = count
else
  bad = ss_check_types({idx_key, 'zset'})
  if bad then
    return all(bad)
  end
end
local top = redis.pcall('ZREVRANGE', applied_key, '0', '0', 'WITHSCORES')
if top['err'] then
  return refused(applied_key, 'zset', top)
end
local spec = {}
if limit > 0 then
  spec[#spec + 1] = info_key
  spec[#spec + 1] = 'hash'
end
for _, e in ipairs(entries) do
  if #e.pairs > 0 then
    spec[#spec + 1] = ustate_key
    spec[#spec + 1] = 'hash'
    break
  end
end
bad = ss_check_types(spec)
if bad then
  return all(bad)
end

-- Outcome for entries that cannot apply: recorded once, reported as duplicate afterwards.
local function drop_all(code)
  for i, e in ipairs(entries) do
    if ss_recorded(applied_key, e.rid) then
      out[i] = 'duplicate'
    else
      ss_record(applied_key, e.rid, SS_CODE[code])
      out[i] = code
    end
  end
  ss_pexpire(applied_key, gone_ttl_ms, ARGV[5])
  ss_record_cap(applied_key)
  return out
end

local raw = redis.pcall('GET', meta_key)
if type(raw) == 'table' and raw['err'] then
  return all('invalid:wrong Redis type at ' .. meta_key)
end
if not raw then
  return drop_all('session_gone')
end
local meta, why = ss_decode_doc(raw)
if not meta then
  return all(why)
end
for _, e in ipairs(entries) do
  if e.delta ~= '' then
    local ok, d = pcall(cjson.decode, e.delta)
    if not ok or type(d) ~= 'table' then
      return all('invalid:state delta is not a JSON object')
    end
    e.delta_t = d
  end
end
if stale_after ~= '' and ss_updated_after(meta, stale_after) then
  return all('stale')
end
if incarnation ~= '' and ss_incarnation(meta) ~= incarnation then
  return drop_all('superseded')
end

-- Records a request: false when its rid is recorded already. The sequence number continues
-- from the newest record, read above (the record's type check).
local next_seq = 0
if top[2] then
  next_seq = math.floor(tonumber(top[2]) / 8) + 1
end
local function record_new(rid, code)
  if redis.call('ZADD', applied_key, 'NX', next_seq * 8 + code, rid) == 0 then
    return false
  end
  ss_first_seq = ss_first_seq or next_seq
  ss_last_seq = next_seq
  next_seq = next_seq + 1
  return true
end

-- A score at or after the entry's timestamp that no member holds yet, so members with equal
-- timestamps keep their append order, as text. The timestamp's own text (a decimal integer)
-- goes to Redis as it came: Redis reads it to the same double as tonumber, so only a taken
-- score needs formatting. The first stored entry's first count was taken above.
local function free_score(e)
  local text, s = e.ts, nil
  local count = e.count or nil
  for _ = 1, 64 do
    if count == nil then
      count = redis.call('ZCOUNT', idx_key, text, text)
    end
    if count == 0 then
      return text
    end
    count = nil
    s = ss_next_score(s or tonumber(e.ts))
    text = string.format('%.17g', s)
  end
  return text
end

local dirty, stored, user_evt = false, false, nil
for i, e in ipairs(entries) do
  if not record_new(e.rid, ss_applied_code(e.flags)) then
    out[i] = 'duplicate'
  elseif e.json ~= '' and redis.call('HSETNX', data_key, e.id, e.json) == 0 then
    -- The first write of an event id wins; a later one is a no-op, not an overwrite.
    out[i] = 'duplicate'
  else
    if e.json ~= '' then
      redis.call('ZADD', idx_key, free_score(e), e.id)
      stored = true
      if limit > 0 and string.find(e.flags, 'u', 1, true) then
        redis.call('HSET', info_key, 'user_evt', e.id)
        user_evt = e.id
      end
    end
    if e.delta_t then
      for k, v in pairs(e.delta_t) do
        meta['state'][k] = v
      end
      dirty = true
    end
    if #e.pairs > 0 then
      redis.call('HSET', ustate_key, unpack(e.pairs))
      ss_pexpire(ustate_key, ustate_ttl_ms, ARGV[4])
    end
    if e.at ~= '' and ss_time_after(e.at, meta['updatedAt']) then
      meta['updatedAt'] = e.at
      dirty = true
    end
    out[i] = 'applied'
  end
end

if dirty then
  if ttl_ms > 0 then
    redis.call('SET', meta_key, cjson.encode(meta), 'PX', ttl_text)
  else
    redis.call('SET', meta_key, cjson.encode(meta), 'KEEPTTL')
  end
else
  ss_pexpire(meta_key, ttl_ms, ttl_text)
end

-- Bound storage: drop the oldest events beyond the limit, but keep the newest user message
-- when none of the kept events is one, so filtered reads return the same window.
if stored and limit > 0 then
  local total = redis.call('ZCARD', idx_key)
  if total > limit then
    local cut = total - limit
    local uid = user_evt or redis.call('HGET', info_key, 'user_evt')  -- as written above
    local urank = nil
    if uid and uid ~= '' then
      urank = redis.call('ZRANK', idx_key, uid)
    end
    if uid ~= '' and not urank then
      uid, urank = ss_find_user(data_key, idx_key, total - 1, 0)
      redis.call('HSET', info_key, 'user_evt', uid or '')
    elseif urank and urank < cut then
      local nid, nrank = ss_find_user(data_key, idx_key, cut - 1, urank + 1)
      if nid then
        uid, urank = nid, nrank
        redis.call('HSET', info_key, 'user_evt', uid)
      end
    end
    local ids = redis.call('ZRANGE', idx_key, 0, cut - 1)
    local doomed = {}
    for _, id in ipairs(ids) do
      if not (urank and urank < cut and id == uid) then
        doomed[#doomed + 1] = id
      end
    end
    ss_del_members(data_key, idx_key, doomed)
  end
end

if ttl_ms > 0 then
  redis.call('PEXPIRE', data_key, ttl_text)
  redis.call('PEXPIRE', idx_key, ttl_text)
  redis.call('PEXPIRE', KEYS[7], ttl_text)
end
-- Our keys: the record is written by every call; the info hash only with bounded storage;
-- the summary-run record follows the session TTL here and gets its own bound when written.
ss_keep(applied_key, ttl_ms, ttl_text)
if limit > 0 or ttl_ms > 0 then
  ss_keep(info_key, ttl_ms, ttl_text)
end
ss_pexpire(KEYS[8], ttl_ms, ttl_text)
ss_record_cap(applied_key)
return out
