-- stream_add: check a shard's configuration and backlog, then append entries to its stream.
-- KEYS[1] shard stream  KEYS[2] shard conf
-- ARGV[1] the producer's shard count  ARGV[2] the producer's entry format
-- ARGV[3] backlog cap (0 = none)  ARGV[4..] encoded entries (one stream entry each)
-- Returns {'ok', id...} | {'config', stored count, stored format} | {'paused'} |
--         {'backpressure', current length}.
-- The first producer of a shard writes its conf and creates the persist group from id 0
-- (never '$', which would skip a backlog).

local stream, conf = KEYS[1], KEYS[2]
local n, v, paused = unpack(redis.call('HMGET', conf, 'n', 'v', 'paused'))
if not n then
  redis.call('HSET', conf, 'n', ARGV[1], 'v', ARGV[2])
  local r = redis.pcall('XGROUP', 'CREATE', stream, 'persist', '0', 'MKSTREAM')
  if type(r) == 'table' and r['err'] and not string.find(r['err'], 'BUSYGROUP', 1, true) then
    return redis.error_reply(r['err'])
  end
elseif n ~= ARGV[1] or v ~= ARGV[2] then
  return {'config', n, v or ''}
end
if paused and paused ~= '' and paused ~= '0' then
  return {'paused'}
end
local cap = tonumber(ARGV[3])
if cap > 0 then
  local len = redis.call('XLEN', stream)
  if len + (#ARGV - 3) > cap then
    return {'backpressure', tostring(len)}
  end
end
local out = {'ok'}
for i = 4, #ARGV do
  out[#out + 1] = redis.call('XADD', stream, '*', 'e', ARGV[i])
end
return out
