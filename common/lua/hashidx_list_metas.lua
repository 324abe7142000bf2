-- hashidx_list_metas: a user's indexed session ids with their metas, in one call.
-- KEYS[1] the user's session index (HASH sid -> entry JSON)
-- ARGV[1] the meta key name of this user without its session id (the id completes it)
-- ARGV[2] the most sessions read here (a larger index returns false: the caller pages it)
-- Returns {sid, meta JSON|false, sid, meta JSON|false, ...} | false.
-- The meta keys are not in KEYS: their names come from the index. They carry the user's hash
-- tag, like the index, so they live in its slot (and on its node on Cluster).

local count = redis.call('HLEN', KEYS[1])
if count > tonumber(ARGV[2]) then
  return false
end
local out = {}
if count == 0 then
  return out
end
local ids = redis.call('HKEYS', KEYS[1])
local names = {}
for i = 1, #ids do
  names[i] = ARGV[1] .. ids[i]
end
local metas = redis.call('MGET', unpack(names))
for i = 1, #ids do
  out[#out + 1] = ids[i]
  out[#out + 1] = metas[i]
end
return out
