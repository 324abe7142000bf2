-- hashidx_load_tracks: read the events of several tracks of one session.
-- KEYS: pairs of (trkdata, trkidx:time) per track, all in one {user} tag
-- ARGV[1] limit (0 = all)  ARGV[2] lowest timestamp ns ('' = -inf)
-- Returns one list of track JSON (oldest first) per pair. With a limit, the newest `limit`.

local limit = tonumber(ARGV[1])
local low = ARGV[2]
if low == '' then
  low = '-inf'
end
local out = {}
for p = 1, #KEYS, 2 do
  local ids
  if limit > 0 then
    local desc = redis.call('ZREVRANGEBYSCORE', KEYS[p + 1], '+inf', low, 'LIMIT', 0, limit)
    ids = {}
    for i = #desc, 1, -1 do
      ids[#ids + 1] = desc[i]
    end
  else
    ids = redis.call('ZRANGEBYSCORE', KEYS[p + 1], low, '+inf')
  end
  local items = {}
  if #ids > 0 then
    local vals = redis.call('HMGET', KEYS[p], unpack(ids))
    for i = 1, #ids do
      if vals[i] then
        items[#items + 1] = vals[i]
      end
    end
  end
  out[#out + 1] = items
end
return out
