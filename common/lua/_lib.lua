-- Shared helpers, prepended by common/scripts.py to every script before it is loaded.
-- No key names are built here: every key arrives through KEYS.

-- Request record (ZSET rid -> seq * 8 + code). Codes are stable: they are stored.
local SS_CODE = {applied = 1, session_gone = 2, superseded = 3, invalid = 4, dead_lettered = 5}
local SS_RECORD_CAP = 1024
-- Recorded instead of SS_CODE.applied for an applied request whose app state (another slot)
-- the worker writes after the script: a waiter reads it as applied once the worker has
-- acknowledged the stream entry, which it does after that write.
local SS_APPLIED_HELD = 6

-- The code to record for an applied entry: held when its flags hold 'a'.
local function ss_applied_code(flags)
  if string.find(flags, 'a', 1, true) then
    return SS_APPLIED_HELD
  end
  return SS_CODE.applied
end

local function ss_recorded(akey, rid)
  local s = redis.call('ZSCORE', akey, rid)
  if s then
    return tonumber(s) % 8
  end
  return nil
end

-- The first and last sequence numbers this script call recorded (nil: none yet).
local ss_first_seq = nil
local ss_last_seq = nil

local function ss_record(akey, rid, code)
  local top = redis.call('ZREVRANGE', akey, 0, 0, 'WITHSCORES')
  local seq = 0
  if top[2] then
    seq = math.floor(tonumber(top[2]) / 8) + 1
  end
  redis.call('ZADD', akey, seq * 8 + code, rid)
  ss_first_seq = ss_first_seq or seq
  ss_last_seq = seq
end

-- Keeps the newest SS_RECORD_CAP rids. Trimmed when this call recorded a multiple of 16
-- (whatever the number of records per call), so a record holds at most 16 more and most
-- writes are spared a command.
local function ss_record_cap(akey)
  if ss_last_seq ~= nil and math.floor(ss_last_seq / 16) == math.floor((ss_first_seq - 1) / 16) then
    return
  end
  redis.call('ZREMRANGEBYRANK', akey, 0, -(SS_RECORD_CAP + 1))
end

-- Numbers passed to redis.call are formatted ('%.17g') on every call; a caller that holds a
-- TTL's text (an ARGV) passes it as ttl_text, the same command with that work spared.
local function ss_pexpire(key, ttl_ms, ttl_text)
  if ttl_ms > 0 then
    redis.call('PEXPIRE', key, ttl_text or ttl_ms)
  end
end

-- Our per-session bookkeeping keys (ss:applied, ss:info, ss:summary) always expire: with the
-- session's TTL, else SS_KEEP_MS (7 days) after our last write to them. So none outlives its
-- session by more than that bound, whoever deletes the session (a Go service leaves ours).
local SS_KEEP_MS = 604800000
local SS_KEEP_TEXT = '604800000'  -- SS_KEEP_MS as command text

local function ss_keep(key, ttl_ms, ttl_text)
  if ttl_ms > 0 then
    redis.call('PEXPIRE', key, ttl_text or ttl_ms)
  else
    redis.call('PEXPIRE', key, SS_KEEP_TEXT)
  end
end

-- Returns nil when every key is absent or of its expected type, else an 'invalid:' status.
local function ss_check_types(spec)
  for i = 1, #spec, 2 do
    local t = redis.call('TYPE', spec[i])['ok']
    if t ~= 'none' and t ~= spec[i + 1] then
      return 'invalid:wrong Redis type ' .. t .. ' at ' .. spec[i]
    end
  end
  return nil
end

-- True when `text` is a time Go's Time.UnmarshalJSON accepts (RFC 3339, one- or two-digit
-- hour, '.' or ',' before the fraction, Z or +hh:mm, fields in range).
local SS_MONTH_DAYS = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}

local function ss_valid_time(text)
  local y, mo, d, h, mi, s, rest
  if string.find(text, '^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d') then
    -- The shape Go writes: the digits are read by position, and Go's UTC zones ('Z' after
    -- the seconds or after their fraction) need no substring (this runs on every write).
    local y1, y2, y3, y4, _, m1, m2, _, d1, d2, _, h1, h2, _, i1, i2, _, s1, s2, z =
      string.byte(text, 1, 20)
    y = (y1 - 48) * 1000 + (y2 - 48) * 100 + (y3 - 48) * 10 + y4 - 48
    mo, d = (m1 - 48) * 10 + m2 - 48, (d1 - 48) * 10 + d2 - 48
    h, mi, s = (h1 - 48) * 10 + h2 - 48, (i1 - 48) * 10 + i2 - 48, (s1 - 48) * 10 + s2 - 48
    if (z == 90 and #text == 20) or string.find(text, '^[%.,]%d+Z$', 20) then
      rest = 'Z'
    else
      rest = string.sub(text, 20)
    end
  else
    y, mo, d, h, mi, s, rest = string.match(text,
      '^(%d%d%d%d)%-(%d%d)%-(%d%d)T(%d%d?):(%d%d):(%d%d)(.*)$')
    if not y then
      return false
    end
    y, mo, d, h, mi, s = tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi),
      tonumber(s)
  end
  if rest ~= 'Z' then
    local _, frac_end = string.find(rest, '^[%.,]%d+')
    local zone = frac_end and string.sub(rest, frac_end + 1) or rest
    if zone ~= 'Z' then
      local oh, om = string.match(zone, '^[%+%-](%d%d):(%d%d)$')
      if not oh or tonumber(oh) > 24 or tonumber(om) > 60 then
        return false
      end
    end
  end
  if mo < 1 or mo > 12 or d < 1 or d > SS_MONTH_DAYS[mo] then
    return false
  end
  if mo == 2 and d == 29 and not (y % 4 == 0 and (y % 100 ~= 0 or y % 400 == 0)) then
    return false
  end
  return h <= 23 and mi <= 59 and s <= 59
end

-- True when `v` is standard padded base64 (line breaks skipped, as Go's decoder does).
local function ss_valid_b64(v)
  if #v % 4 == 0 and string.find(v, '^[A-Za-z0-9+/]*=?=?$') then
    return true
  end
  if not string.find(v, '[\r\n]') then
    return false
  end
  v = string.gsub(v, '[\r\n]', '')
  return #v % 4 == 0 and string.find(v, '^[A-Za-z0-9+/]*=?=?$') ~= nil
end

-- Why the reader would refuse a decoded session document (nil when it would not): the
-- shapes and types of its fields. `raw` tells an empty state object from an empty array.
-- (A bad updatedAt is not refused: every write replaces it, as the earliest time.)
local SS_DOC_STRINGS = {'id', 'appName', 'userID', 'generation', 'updatedAt'}

local function ss_doc_problem(doc, raw)
  local null = cjson.null
  for i = 1, #SS_DOC_STRINGS do
    local f = SS_DOC_STRINGS[i]
    local v = doc[f]
    if v ~= nil and v ~= null and type(v) ~= 'string' then
      return 'invalid:session document field ' .. f .. ' is not a string'
    end
  end
  local c = doc['createdAt']
  if c ~= nil and c ~= null and not (type(c) == 'string' and ss_valid_time(c)) then
    return 'invalid:session document field createdAt is not a time'
  end
  local st = doc['state']
  if next(st) == nil and string.find(raw, '"state"%s*:%s*%[') then
    return 'invalid:session state is not a JSON object'
  end
  for k, v in pairs(st) do
    if type(k) ~= 'string' then
      return 'invalid:session state is not a JSON object'
    end
    if v ~= null and not (type(v) == 'string' and ss_valid_b64(v)) then
      return 'invalid:session state value ' .. k .. ' is not base64'
    end
  end
  return nil
end

-- Decodes a session document (HashIdx meta or legacy SessionState) and normalises its state.
-- Returns the table, or nil and a reason: a document the reader would refuse is refused here
-- too, so no write applies onto it.
local function ss_decode_doc(raw)
  local ok, doc = pcall(cjson.decode, raw)
  if not ok or type(doc) ~= 'table' or not string.find(raw, '^%s*{') then
    return nil, 'invalid:session document is not a JSON object'
  end
  local st = doc['state']
  if st == nil or st == cjson.null then
    doc['state'] = {}
  elseif type(st) ~= 'table' then
    return nil, 'invalid:session state is not a JSON object'
  end
  local why = ss_doc_problem(doc, raw)
  if why then
    return nil, why
  end
  return doc, nil
end

-- The incarnation of a stored document: its generation, or createdAt for older records.
local function ss_incarnation(doc)
  local g = doc['generation']
  if type(g) == 'string' and g ~= '' then
    return g
  end
  local c = doc['createdAt']
  if type(c) == 'string' then
    return c
  end
  return ''
end

-- Go RFC 3339 time text -> seconds since the epoch and nanoseconds, or nil.
local function ss_days_from_civil(y, m, d)
  if m <= 2 then
    y = y - 1
  end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function ss_parse_time(text)
  if type(text) ~= 'string' then
    return nil
  end
  local y, mo, d, h, mi, s, rest = string.match(text,
    '^(%d%d%d%d)%-(%d%d)%-(%d%d)T(%d%d):(%d%d):(%d%d)(.*)$')
  if not y then
    return nil
  end
  local ns = 0
  local frac, zone = string.match(rest, '^[%.,](%d+)(.*)$')
  if frac then
    frac = string.sub(frac .. '000000000', 1, 9)
    ns = tonumber(frac)
  else
    zone = rest
  end
  local off = 0
  if zone ~= 'Z' then
    local sign, oh, om = string.match(zone, '^([%+%-])(%d%d):(%d%d)$')
    if not sign then
      return nil
    end
    off = tonumber(oh) * 3600 + tonumber(om) * 60
    if sign == '-' then
      off = -off
    end
  end
  local days = ss_days_from_civil(tonumber(y), tonumber(mo), tonumber(d))
  local sec = days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(s) - off
  return sec, ns
end

-- True when time text a is strictly later than b (an unparseable b counts as earliest).
-- Two UTC texts of one length compare as strings (fixed-width fields); others are parsed.
local function ss_time_after(a, b)
  if type(b) == 'string' and #a == #b and string.byte(a, -1) == 90 and string.byte(b, -1) == 90
      and string.byte(a, 20) == string.byte(b, 20) then
    return a > b
  end
  local as, an = ss_parse_time(a)
  if not as then
    return false
  end
  local bs, bn = ss_parse_time(b)
  if not bs then
    return true
  end
  return as > bs or (as == bs and an > bn)
end

-- True when a decoded session document's updatedAt is later than time text t (a missing or
-- unparseable one is not).
local function ss_updated_after(doc, t)
  local u = doc['updatedAt']
  return type(u) == 'string' and ss_time_after(u, t)
end

-- The next double above x (scores near 1.7e18 are about 256 ns apart).
local function ss_next_score(x)
  local _, e = math.frexp(x)
  local step = 2 ^ (e - 53)
  if step <= 0 then
    step = 2 ^ -1074
  end
  return x + step
end

-- A score at or after `score` that no member holds yet: members with equal timestamps keep
-- their append order instead of sorting by member name.
local function ss_free_score(zkey, score)
  local s = score
  for _ = 1, 64 do
    if redis.call('ZCOUNT', zkey, string.format('%.17g', s), string.format('%.17g', s)) == 0 then
      return s
    end
    s = ss_next_score(s)
  end
  return s
end

local function ss_fmt_score(s)
  return string.format('%.17g', s)
end

-- True when a stored event JSON is a user message (any choice's message or delta role).
local function ss_is_user_json(json)
  if not string.find(json, '"role":"user"', 1, true) then
    return false
  end
  local ok, ev = pcall(cjson.decode, json)
  if not ok or type(ev) ~= 'table' or type(ev['choices']) ~= 'table' then
    return false
  end
  for _, c in ipairs(ev['choices']) do
    if type(c) == 'table' then
      local m, d = c['message'], c['delta']
      if (type(m) == 'table' and m['role'] == 'user') or (type(d) == 'table' and d['role'] == 'user') then
        return true
      end
    end
  end
  return false
end

-- Newest user message among index ranks [lo_rank, hi_rank], walking back in batches of 100.
local function ss_find_user(data_key, idx_key, hi_rank, lo_rank)
  local hi = hi_rank
  while hi >= lo_rank do
    local lo = math.max(lo_rank, hi - 99)
    local ids = redis.call('ZRANGE', idx_key, lo, hi)
    if #ids == 0 then
      return nil, nil, nil
    end
    local vals = redis.call('HMGET', data_key, unpack(ids))
    for j = #ids, 1, -1 do
      if vals[j] and ss_is_user_json(vals[j]) then
        return ids[j], lo + j - 1, vals[j]
      end
    end
    hi = lo - 1
  end
  return nil, nil, nil
end

local function ss_del_members(data_key, idx_key, ids)
  for i = 1, #ids, 500 do
    local chunk = {}
    for j = i, math.min(i + 499, #ids) do
      chunk[#chunk + 1] = ids[j]
    end
    redis.call('HDEL', data_key, unpack(chunk))
    redis.call('ZREM', idx_key, unpack(chunk))
  end
end

-- Standard padded base64 (state values inside session JSON are base64 of raw bytes).
local SS_B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'

local function ss_b64_encode(data)
  local out = {}
  for i = 1, #data, 3 do
    local a, b, c = string.byte(data, i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local q = {}
    for k = 3, 0, -1 do
      local v = math.floor(n / (64 ^ k)) % 64
      q[#q + 1] = string.sub(SS_B64, v + 1, v + 1)
    end
    if not b then
      q[3], q[4] = '=', '='
    elseif not c then
      q[4] = '='
    end
    out[#out + 1] = table.concat(q)
  end
  return table.concat(out)
end

local function ss_b64_decode(text)
  if #text % 4 ~= 0 then
    return nil
  end
  local out = {}
  for i = 1, #text, 4 do
    local n, pad = 0, 0
    for k = 0, 3 do
      local ch = string.sub(text, i + k, i + k)
      local v
      if ch == '=' then
        v, pad = 0, pad + 1
      else
        local p = string.find(SS_B64, ch, 1, true)
        if not p or pad > 0 then
          return nil
        end
        v = p - 1
      end
      n = n * 64 + v
    end
    local bytes = string.char(math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
    out[#out + 1] = string.sub(bytes, 1, 3 - pad)
  end
  return table.concat(out)
end

-- Merges one track name into state["tracks"] (base64 of a JSON list of names).
-- Returns the new base64 value (or the old one if the name is there), or nil on bad data.
local function ss_merge_track(current, track)
  local names = {}
  if type(current) == 'string' and current ~= '' then
    local raw = ss_b64_decode(current)
    if not raw then
      return nil
    end
    local ok, list = pcall(cjson.decode, raw)
    if not ok or type(list) ~= 'table' then
      return nil
    end
    names = list
  end
  for _, n in ipairs(names) do
    if n == track then
      return current
    end
  end
  local parts = {}
  for _, n in ipairs(names) do
    parts[#parts + 1] = cjson.encode(n)
  end
  parts[#parts + 1] = cjson.encode(track)
  return ss_b64_encode('[' .. table.concat(parts, ',') .. ']')
end

-- Legacy event ZSETs hold the event JSON as the member: the newest user message among ranks
-- [lo_rank, hi_rank], walking back in batches of 100. Returns its JSON and rank, or nil.
local function ss_find_user_z(zkey, hi_rank, lo_rank)
  local hi = hi_rank
  while hi >= lo_rank do
    local lo = math.max(lo_rank, hi - 99)
    local members = redis.call('ZRANGE', zkey, lo, hi)
    if #members == 0 then
      return nil, nil
    end
    for j = #members, 1, -1 do
      if ss_is_user_json(members[j]) then
        return members[j], lo + j - 1
      end
    end
    hi = lo - 1
  end
  return nil, nil
end

-- The event window of a legacy event ZSET (members are event JSON): the newest `limit`
-- (0 = all) at or after `after` ('' = no bound), oldest first, and unless `exact` the newest
-- earlier user message when no window member looks like one. Returns events, prepend|false.
local function ss_window_z(zkey, limit, after, exact)
  local events = {}
  if after ~= '' then
    if limit > 0 then
      local desc = redis.call('ZREVRANGEBYSCORE', zkey, '+inf', after, 'LIMIT', 0, limit)
      for i = #desc, 1, -1 do
        events[#events + 1] = desc[i]
      end
    else
      events = redis.call('ZRANGEBYSCORE', zkey, after, '+inf')
    end
  elseif limit > 0 then
    events = redis.call('ZRANGE', zkey, -limit, -1)
  else
    events = redis.call('ZRANGE', zkey, 0, -1)
  end
  if exact then
    return events, false
  end
  for i = 1, #events do
    if string.find(events[i], '"role":"user"', 1, true) then
      return events, false
    end
  end
  local start = redis.call('ZCARD', zkey) - #events
  return events, ss_find_user_z(zkey, start - 1, 0) or false
end

-- The same window for a HashIdx session (time index of ids + data HASH).
local function ss_window_h(data_key, idx_key, limit, after, exact)
  local ids
  if after ~= '' then
    if limit > 0 then
      local desc = redis.call('ZREVRANGEBYSCORE', idx_key, '+inf', after, 'LIMIT', 0, limit)
      ids = {}
      for i = #desc, 1, -1 do
        ids[#ids + 1] = desc[i]
      end
    else
      ids = redis.call('ZRANGEBYSCORE', idx_key, after, '+inf')
    end
  elseif limit > 0 then
    ids = redis.call('ZRANGE', idx_key, -limit, -1)
  else
    ids = redis.call('ZRANGE', idx_key, 0, -1)
  end
  local events, has_user = {}, false
  if #ids > 0 then
    local vals = redis.call('HMGET', data_key, unpack(ids))
    for i = 1, #ids do
      local v = vals[i]
      if v then
        events[#events + 1] = v
        if not has_user and string.find(v, '"role":"user"', 1, true) then
          has_user = true
        end
      end
    end
  end
  if has_user or exact then
    return events, false, ids
  end
  local start = redis.call('ZCARD', idx_key) - #ids
  local _, _, json = ss_find_user(data_key, idx_key, start - 1, 0)
  return events, json or false, ids
end

-- Stream ids 'ms-seq' compared as integer pairs (never as strings): -1, 0 or 1.
-- A missing or malformed id sorts before every real id.
local function ss_id_parts(id)
  if type(id) ~= 'string' then
    return -1, -1
  end
  local ms, seq = string.match(id, '^(%d+)%-(%d+)$')
  if not ms then
    return -1, -1
  end
  return tonumber(ms), tonumber(seq)
end

local function ss_id_cmp(a, b)
  local am, as = ss_id_parts(a)
  local bm, bs = ss_id_parts(b)
  if am ~= bm then
    return am < bm and -1 or 1
  end
  if as ~= bs then
    return as < bs and -1 or 1
  end
  return 0
end

-- Our bookkeeping `key` takes the remaining TTL of `src` (at least min_ms), else SS_KEEP_MS
-- (at least min_ms) when `src` has none or is missing.
local function ss_follow_keep(key, src, min_ms)
  local t = redis.call('PTTL', src)
  if t > 0 then
    redis.call('PEXPIRE', key, math.max(t, min_ms))
  else
    redis.call('PEXPIRE', key, math.max(SS_KEEP_MS, min_ms))
  end
end

-- Gives `key` the remaining TTL of `src` (at least min_ms), or no TTL when `src` has none.
-- A missing `src` leaves `key` with min_ms (0 = untouched).
local function ss_follow_ttl(key, src, min_ms)
  local t = redis.call('PTTL', src)
  if t == -1 then
    redis.call('PERSIST', key)
  elseif t > 0 then
    redis.call('PEXPIRE', key, math.max(t, min_ms))
  elseif min_ms > 0 then
    redis.call('PEXPIRE', key, min_ms)
  end
end
