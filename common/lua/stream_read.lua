-- stream_read: read a batch of a shard stream (persist entries or summary jobs) for the
-- shard's lease holder: the only way into the group's pending list.
-- KEYS[1] shard lease  KEYS[2] shard stream (persist or summary)
-- ARGV[1] lease token  ARGV[2] consumer name  ARGV[3] count
-- ARGV[4] '>' for new entries, or an id to page through this consumer's pending list
-- ARGV[5] consumer group ('persist' or 'summary')
-- Returns {'lost'} when the token does not hold the lease; {'idle', newest id} when no new
-- entry is waiting (wait with XREAD BLOCK from that id, outside any script);
-- {'ok', {{id, {field, value...}}...}} otherwise. BLOCK is never used here.

if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return {'lost'}
end
local function read()
  return redis.pcall('XREADGROUP', 'GROUP', ARGV[5], ARGV[2], 'COUNT', ARGV[3],
    'STREAMS', KEYS[2], ARGV[4])
end
local res = read()
if type(res) == 'table' and res['err'] then
  if not string.find(res['err'], 'NOGROUP', 1, true) then
    return redis.error_reply(res['err'])
  end
  -- A missing stream is not re-created here (a resize deletes drained streams; producers
  -- create them): wait for one instead.
  if redis.call('EXISTS', KEYS[2]) == 0 then
    return {'idle', '0-0'}
  end
  redis.call('XGROUP', 'CREATE', KEYS[2], ARGV[5], '0')
  res = read()
end
local entries = {}
if res and res[1] then
  entries = res[1][2]
end
if #entries == 0 and ARGV[4] == '>' then
  local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
  local id = '0-0'
  if last[1] then
    id = last[1][1]
  end
  return {'idle', id}
end
return {'ok', entries}
