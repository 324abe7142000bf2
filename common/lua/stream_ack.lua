-- stream_ack: acknowledge entries that reached their outcome, then trim the stream.
-- KEYS[1] shard stream  KEYS[2] shard failures
-- ARGV: entry ids
-- Trims with MINID to the oldest pending entry, or to the group's last-delivered id when
-- nothing is pending, so an undelivered entry is never removed.
-- Returns the number of entries acknowledged.

local acked = 0
if #ARGV > 0 then
  acked = redis.call('XACK', KEYS[1], 'persist', unpack(ARGV))
  redis.call('HDEL', KEYS[2], unpack(ARGV))
end
local minid = nil
local pending = redis.call('XPENDING', KEYS[1], 'persist')
if tonumber(pending[1]) > 0 then
  minid = pending[2]
else
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local name, last = nil, nil
    for i = 1, #g, 2 do
      if g[i] == 'name' then
        name = g[i + 1]
      elseif g[i] == 'last-delivered-id' then
        last = g[i + 1]
      end
    end
    if name == 'persist' then
      minid = last
    end
  end
end
if minid then
  redis.call('XTRIM', KEYS[1], 'MINID', minid)
end
return acked
