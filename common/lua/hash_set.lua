-- hash_set: set fields of one state HASH and refresh its TTL in one step.
-- KEYS[1] the hash (app state or user state)
-- ARGV[1] ttl ms (0 = leave the TTL alone)  ARGV[2..] field, value pairs (may be none)
-- Returns 1, or invalid:<why> when the key holds another type (nothing is written).

local bad = ss_check_types({KEYS[1], 'hash'})
if bad then
  return bad
end
if #ARGV > 1 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 2))
end
local ttl_ms = tonumber(ARGV[1])
if ttl_ms > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl_ms)
end
return 1
