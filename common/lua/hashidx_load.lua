-- hashidx_load: read one HashIdx session: meta, an event window, summary, user state, tracks.
-- KEYS[1] meta  KEYS[2] evtdata  KEYS[3] evtidx:time  KEYS[4] sesssum  KEYS[5] userstate
-- KEYS[6] trkidx:names  KEYS[7] appstate (optional: only on a single-node server, where a
-- key of another slot may be read; on Cluster the caller pipelines HGETALL beside the script)
-- ARGV[1] limit (0 = every event)  ARGV[2] lowest timestamp ns ('' = none)
-- ARGV[3] flags: 'e' events, 's' summary, 'u' user state, 't' track names, 'a' app state,
--          'x' exact window (no earlier user message looked up), 'i' the window's ids too
-- Returns {meta|false, summary|false, {user state field, value, ...}, {track names},
--          {event JSON of the window, oldest first}, newest earlier user message JSON|false,
--          {app state field, value, ...}, {the window's ids, oldest first (flag 'i')}}
-- (only the first seven when the meta is missing).
-- The window is the newest `limit` events at or after the timestamp. When no event of the
-- window looks like a user message, the newest earlier user message is returned beside it
-- (the reference filtering prepends it). Reads only; never touches a TTL.

local meta = redis.call('GET', KEYS[1])
if not meta then
  return {false, false, {}, {}, {}, false, {}}
end
local limit = tonumber(ARGV[1])
local after = ARGV[2]
local flags = ARGV[3]
local function want(f)
  return string.find(flags, f, 1, true) ~= nil
end

local summary, ustate, names, events, prepend, astate = false, {}, {}, {}, false, {}
local window_ids = {}
if want('a') then
  astate = redis.call('HGETALL', KEYS[7])
end
if want('s') then
  summary = redis.call('GET', KEYS[4])
end
if want('u') then
  ustate = redis.call('HGETALL', KEYS[5])
end
if want('t') then
  names = redis.call('SMEMBERS', KEYS[6])
end
if want('e') then
  local ids
  if after ~= '' then
    if limit > 0 then
      ids = redis.call('ZREVRANGEBYSCORE', KEYS[3], '+inf', after, 'LIMIT', 0, limit)
      local asc = {}
      for i = #ids, 1, -1 do
        asc[#asc + 1] = ids[i]
      end
      ids = asc
    else
      ids = redis.call('ZRANGEBYSCORE', KEYS[3], after, '+inf')
    end
  elseif limit > 0 then
    ids = redis.call('ZRANGE', KEYS[3], -limit, -1)
  else
    ids = redis.call('ZRANGE', KEYS[3], 0, -1)
  end
  if want('i') then
    window_ids = ids
  end
  local has_user = false
  if #ids > 0 then
    local vals = redis.call('HMGET', KEYS[2], unpack(ids))
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
  if not has_user and not want('x') then
    local start = redis.call('ZCARD', KEYS[3]) - #ids
    local _, _, json = ss_find_user(KEYS[2], KEYS[3], start - 1, 0)
    prepend = json or false
  end
end
return {meta, summary, ustate, names, events, prepend, astate, window_ids}
