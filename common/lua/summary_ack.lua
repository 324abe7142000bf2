-- summary_ack: acknowledge summary jobs that reached their end, then trim the stream.
-- KEYS[1] shard summary stream
-- ARGV: entry ids
-- Trims with MINID to the oldest pending job, or past the group's last-delivered id when
-- nothing is pending, so a job not yet delivered is never removed and XLEN is the queue.
-- Returns the number of jobs acknowledged.

local acked = 0
if #ARGV > 0 then
  acked = redis.call('XACK', KEYS[1], 'summary', unpack(ARGV))
end
local minid = nil
local pending = redis.call('XPENDING', KEYS[1], 'summary')
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
    if name == 'summary' and last then
      local ms, seq = ss_id_parts(last)
      if ms >= 0 then
        minid = string.format('%.0f-%.0f', ms, seq + 1)
      end
    end
  end
end
if minid then
  redis.call('XTRIM', KEYS[1], 'MINID', minid)
end
return acked
