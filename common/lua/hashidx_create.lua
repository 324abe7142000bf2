-- hashidx_create: create a HashIdx session unless it exists.
-- KEYS[1] meta  KEYS[2] hashidx:sessidx (same {user} tag)
-- ARGV[1] meta JSON  ARGV[2] session id  ARGV[3] ttl ms (0 = none)
-- ARGV[4] index entry JSON  ARGV[5] '1' to write the user session index
-- Returns 1 when created, 0 when the meta key already exists (of any type).

local bad = ss_check_types({KEYS[2], 'hash'})
if bad and ARGV[5] == '1' then
  return bad
end
local created
if tonumber(ARGV[3]) > 0 then
  created = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[3])
else
  created = redis.call('SET', KEYS[1], ARGV[1], 'NX')
end
if not created then
  return 0
end
if ARGV[5] == '1' then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
end
return 1
