-- hashidx_import_chunk: write a chunk of imported events or track events (migrate).
-- KEYS[1] data HASH (evtdata or trkdata)  KEYS[2] time index ZSET (evtidx or trkidx:time)
-- ARGV[1] ttl ms (0 = none)  ARGV[2] value of the `_seq` field ('' = do not set)
-- ARGV[3..] triples: field, JSON, score
-- Returns the number of triples written.

local n = 0
for i = 3, #ARGV, 3 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[2], ARGV[i + 2], ARGV[i])
  n = n + 1
end
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], '_seq', ARGV[2])
end
local ttl_ms = tonumber(ARGV[1])
if ttl_ms > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl_ms)
  redis.call('PEXPIRE', KEYS[2], ttl_ms)
end
return n
