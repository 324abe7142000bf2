-- legacy_append: apply a batch of appends to one legacy (ZSet layout) session, entry by entry.
-- KEYS[1] sess:{app}:<user> (HASH sid -> SessionState JSON)  KEYS[2] event:{app}:<user>:<sid>
-- KEYS[3] ss:applied:{app}:<user>:<sid>  KEYS[4] ss:info:{app}:<user>:<sid>
-- KEYS[5] userstate:{app}:<user> (the old user-state key; same {app} tag)
-- KEYS[6] sesssum:{app}:<user>  KEYS[7] ss:summary (their TTL follows the session's:
-- refreshed with it, never created; ours always expire)
-- ARGV[1] session id  ARGV[2] session ttl ms (0 = keep)  ARGV[3] storage limit (0 = never trim)
-- ARGV[4] incarnation ('' = not checked)  ARGV[5] user-state ttl ms  ARGV[6] ttl ms for an
-- outcome recorded on a missing session  ARGV[7] '1' = write user-state pairs to KEYS[5]
-- ARGV[8] refuse every entry ('stale', nothing written or recorded) when the stored updatedAt
-- is after this time ('' = no check)
-- ARGV[9] number of entries, then per entry (as common.hashidx.AppendEntry.argv):
--   rid, event id, event JSON ('' = not stored), timestamp ns, flags ('u' = user message, 'a' = app state
--   written after this script: recorded as held),
--   producer time text ('' = none), session-state delta JSON ('' = none; values base64|null),
--   number of user-state pairs n, then n field/value pairs.
-- Returns one status per entry: applied | duplicate | session_gone | superseded | stale |
-- migrated | invalid:<why>. `migrated` (nothing written, nothing recorded) means `migrate` moved the
-- session to HashIdx: the caller applies the entries there. Validation precedes every write.
-- The event member is the full event JSON (as the Go service writes it): an identical member
-- is a duplicate. ss:info holds `user_evt` (JSON of the newest user message we stored).

local sess_key, event_key, applied_key, info_key, ustate_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local sid = ARGV[1]
local ttl_ms = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local incarnation = ARGV[4]
local ustate_ttl_ms = tonumber(ARGV[5])
local gone_ttl_ms = tonumber(ARGV[6])
local write_user = ARGV[7] == '1'
local stale_after = ARGV[8]
local n = tonumber(ARGV[9])

local entries = {}
local pos = 10
for i = 1, n do
  local e = {rid = ARGV[pos], id = ARGV[pos + 1], json = ARGV[pos + 2], ts = ARGV[pos + 3],
    flags = ARGV[pos + 4], at = ARGV[pos + 5], delta = ARGV[pos + 6], pairs = {}}
  local np = tonumber(ARGV[pos + 7])
  for j = 1, np * 2 do
    e.pairs[j] = ARGV[pos + 7 + j]
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

local bad = ss_check_types({sess_key, 'hash', event_key, 'zset', applied_key, 'zset',
  info_key, 'hash', ustate_key, 'hash'})
if bad then
  return all(bad)
end

local function drop_all(code)
  for i, e in ipairs(entries) do
    if ss_recorded(applied_key, e.rid) then
      out[i] = 'duplicate'
    else
      ss_record(applied_key, e.rid, SS_CODE[code])
      out[i] = code
    end
  end
  ss_pexpire(applied_key, gone_ttl_ms)
  ss_record_cap(applied_key)
  return out
end

local raw = redis.call('HGET', sess_key, sid)
if not raw then
  if redis.call('HEXISTS', info_key, 'migrated') == 1 then
    ss_keep(info_key, ttl_ms)
    return all('migrated')
  end
  return drop_all('session_gone')
end
local doc, why = ss_decode_doc(raw)
if not doc then
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
if stale_after ~= '' and ss_updated_after(doc, stale_after) then
  return all('stale')
end
if incarnation ~= '' and ss_incarnation(doc) ~= incarnation then
  return drop_all('superseded')
end

local dirty, stored = false, false
for i, e in ipairs(entries) do
  if ss_recorded(applied_key, e.rid) then
    out[i] = 'duplicate'
  elseif e.json ~= '' and redis.call('ZSCORE', event_key, e.json) then
    ss_record(applied_key, e.rid, ss_applied_code(e.flags))
    out[i] = 'duplicate'
  else
    if e.json ~= '' then
      local score = ss_free_score(event_key, tonumber(e.ts))
      redis.call('ZADD', event_key, ss_fmt_score(score), e.json)
      stored = true
      if string.find(e.flags, 'u', 1, true) then
        redis.call('HSET', info_key, 'user_evt', e.json)
      end
    end
    if e.delta_t then
      for k, v in pairs(e.delta_t) do
        doc['state'][k] = v
      end
      dirty = true
    end
    if write_user and #e.pairs > 0 then
      redis.call('HSET', ustate_key, unpack(e.pairs))
      ss_pexpire(ustate_key, ustate_ttl_ms)
    end
    if e.at ~= '' and ss_time_after(e.at, doc['updatedAt']) then
      doc['updatedAt'] = e.at
      dirty = true
    end
    ss_record(applied_key, e.rid, ss_applied_code(e.flags))
    out[i] = 'applied'
  end
end

if dirty then
  redis.call('HSET', sess_key, sid, cjson.encode(doc))
end

-- Bound storage by rank; keep the newest user message when the kept window holds none.
if stored and limit > 0 then
  local total = redis.call('ZCARD', event_key)
  if total > limit then
    local cut = total - limit
    local ujson = redis.call('HGET', info_key, 'user_evt')
    local urank = nil
    if ujson and ujson ~= '' then
      urank = redis.call('ZRANK', event_key, ujson)
    end
    if ujson ~= '' and not urank then
      ujson, urank = ss_find_user_z(event_key, total - 1, 0)
      redis.call('HSET', info_key, 'user_evt', ujson or '')
    elseif urank and urank < cut then
      local nj, nr = ss_find_user_z(event_key, cut - 1, urank + 1)
      if nj then
        ujson, urank = nj, nr
        redis.call('HSET', info_key, 'user_evt', ujson)
      end
    end
    if urank and urank < cut then
      if urank + 1 <= cut - 1 then
        redis.call('ZREMRANGEBYRANK', event_key, urank + 1, cut - 1)
      end
      if urank > 0 then
        redis.call('ZREMRANGEBYRANK', event_key, 0, urank - 1)
      end
    else
      redis.call('ZREMRANGEBYRANK', event_key, 0, cut - 1)
    end
  end
end

if ttl_ms > 0 then
  redis.call('PEXPIRE', sess_key, ttl_ms)
  redis.call('PEXPIRE', event_key, ttl_ms)
  redis.call('PEXPIRE', KEYS[6], ttl_ms)
end
-- Our keys: as in hashidx_append (the info hash is also written for user messages).
ss_keep(applied_key, ttl_ms)
ss_keep(info_key, ttl_ms)
ss_pexpire(KEYS[7], ttl_ms)
ss_record_cap(applied_key)
return out
