-- legacy_load_tracks: read the events of several tracks of one legacy session.
-- KEYS: one track:{app}:<user>:<sid>:<track> ZSET per track (members are track JSON)
-- ARGV[1] limit (0 = all)  ARGV[2] lowest timestamp ns ('' = -inf)
-- Returns one list of track JSON (oldest first) per key; with a limit, the newest `limit`.
-- Future-dated events are included (the Go service stops at "now").

local limit = tonumber(ARGV[1])
local low = ARGV[2]
if low == '' then
  low = '-inf'
end
local out = {}
for p = 1, #KEYS do
  local items
  if limit > 0 then
    local desc = redis.call('ZREVRANGEBYSCORE', KEYS[p], '+inf', low, 'LIMIT', 0, limit)
    items = {}
    for i = #desc, 1, -1 do
      items[#items + 1] = desc[i]
    end
  else
    items = redis.call('ZRANGEBYSCORE', KEYS[p], low, '+inf')
  end
  out[#out + 1] = items
end
return out
