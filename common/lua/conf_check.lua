-- conf_check: the deployment-wide pipeline configuration, written by whoever comes first.
-- KEYS[1] [p:]ss:conf (HASH: n shard count, v entry format)
-- ARGV[1] shard count  ARGV[2] entry format
-- Returns {stored n, stored v}; equal to the arguments unless another count is in force.

local n, v = unpack(redis.call('HMGET', KEYS[1], 'n', 'v'))
if not n then
  redis.call('HSET', KEYS[1], 'n', ARGV[1], 'v', ARGV[2])
  return {ARGV[1], ARGV[2]}
end
return {n, v or ''}
