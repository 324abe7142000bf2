-- summary_add: queue a summary job on a shard's summary stream, with its cut.
-- KEYS[1] shard persist stream  KEYS[2] shard summary stream  KEYS[3] shard conf
-- ARGV[1] the producer's shard count  ARGV[2] the producer's entry format
-- ARGV[3] queue cap (summary_queue_size; 0 = none)  ARGV[4] the encoded job
-- Returns {'ok', id, cut} | {'config', stored count, stored format} | {'paused'} |
--         {'full', current length}.
-- The cut is the persist stream's last generated id ('0-0' when it has none): every write
-- queued before this job has an id <= cut, so a worker that waits until the persist group
-- is past the cut summarizes all of them. The job's entry holds 'e' (job) and 'c' (cut).

local stream, summary, conf = KEYS[1], KEYS[2], KEYS[3]
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
local len = redis.call('XLEN', summary)
if cap > 0 and len >= cap then
  return {'full', tostring(len)}
end
if len == 0 then
  local r = redis.pcall('XGROUP', 'CREATE', summary, 'summary', '0', 'MKSTREAM')
  if type(r) == 'table' and r['err'] and not string.find(r['err'], 'BUSYGROUP', 1, true) then
    return redis.error_reply(r['err'])
  end
end
local cut = '0-0'
local info = redis.pcall('XINFO', 'STREAM', stream)
if type(info) == 'table' and not info['err'] then
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
      cut = info[i + 1]
    end
  end
end
local id = redis.call('XADD', summary, '*', 'e', ARGV[4], 'c', cut)
return {'ok', id, cut}
