-- hashidx_import_finish: write the meta and the rest of an imported session (migrate).
-- KEYS[1] meta  KEYS[2] sesssum  KEYS[3] trkidx:names  KEYS[4] ss:info  KEYS[5] ss:applied
-- KEYS[6] hashidx:sessidx (all {user} tag)
-- ARGV[1] meta JSON  ARGV[2] summary map JSON ('' = none)  ARGV[3] session ttl ms (0 = none)
-- ARGV[4] track ttl ms (0 = none)  ARGV[5] session id  ARGV[6] index entry JSON ('' = none)
-- ARGV[7] id of the newest user message ('' = none)  ARGV[8] incarnation
-- ARGV[9] number of track names n, then n names, then request record pairs (score, rid)
-- Returns ok. The request record carries the legacy one over, so a write applied before the
-- migration is still recognised (and skipped) when it is replayed afterwards.

local ttl_ms = tonumber(ARGV[3])
if ttl_ms > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl_ms)
else
  redis.call('SET', KEYS[1], ARGV[1])
end
if ARGV[2] ~= '' then
  redis.call('SET', KEYS[2], ARGV[2])
  ss_pexpire(KEYS[2], ttl_ms)
end
local n = tonumber(ARGV[9])
if n > 0 then
  redis.call('SADD', KEYS[3], unpack(ARGV, 10, 9 + n))
  ss_pexpire(KEYS[3], tonumber(ARGV[4]))
end
for i = 10 + n, #ARGV, 2 do
  redis.call('ZADD', KEYS[5], ARGV[i], ARGV[i + 1])
end
ss_keep(KEYS[5], ttl_ms)
if ARGV[6] ~= '' then
  redis.call('HSETNX', KEYS[6], ARGV[5], ARGV[6])
end
redis.call('DEL', KEYS[4])
redis.call('HSET', KEYS[4], 'imported', ARGV[8])
if ARGV[7] ~= '' then
  redis.call('HSET', KEYS[4], 'user_evt', ARGV[7])
end
ss_keep(KEYS[4], ttl_ms)
return 'ok'
