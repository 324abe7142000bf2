-- hashidx_create: create a HashIdx session unless it exists; optionally read back the state
-- scopes the new session sees, so that a create is one round trip.
-- KEYS[1] meta  KEYS[2] hashidx:sessidx (same {user} tag)
-- KEYS[3] hashidx:userstate (same tag; only with ARGV[6] = '1')
-- KEYS[4] appstate (optional, only with ARGV[6] = '1': on a single-node server, where a key of
--         another slot may be read; on Cluster the caller pipelines HGETALL beside the script)
-- ARGV[1] meta JSON  ARGV[2] session id  ARGV[3] ttl ms (0 = none)
-- ARGV[4] index entry JSON  ARGV[5] '1' to write the user session index
-- ARGV[6] '1' to read the scopes  ARGV[7] user-state TTL s, ARGV[8] app-state TTL s: with
--         ARGV[6] = '1', a TTL > 0 is refreshed on the scope keys it reads (EXPIRE)
-- Every key is type-checked before the first write (an 'invalid:...' status otherwise).
-- Returns 0 when the meta key already exists (of any type); when created, 1, or with
-- ARGV[6] = '1' {1, {user state field, value, ...}, {app state field, value, ...}}.

local read = ARGV[6] == '1'
local spec = {}
if ARGV[5] == '1' then
  spec = {KEYS[2], 'hash'}
end
if read then
  spec[#spec + 1] = KEYS[3]
  spec[#spec + 1] = 'hash'
  if KEYS[4] then
    spec[#spec + 1] = KEYS[4]
    spec[#spec + 1] = 'hash'
  end
end
local bad = ss_check_types(spec)
if bad then
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
if not read then
  return 1
end
local function read_scope(key, ttl_s)
  local flat = redis.call('HGETALL', key)
  if tonumber(ttl_s) > 0 then
    redis.call('EXPIRE', key, ttl_s)
  end
  return flat
end
local ustate = read_scope(KEYS[3], ARGV[7])
local astate = {}
if KEYS[4] then
  astate = read_scope(KEYS[4], ARGV[8])
end
return {1, ustate, astate}
