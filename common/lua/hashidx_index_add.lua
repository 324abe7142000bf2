-- hashidx_index_add: add a session to its user's session index unless it is there.
-- KEYS[1] hashidx:meta:<app>:{<user>}:<sid>  KEYS[2] hashidx:sessidx:<app>:{<user>}
-- ARGV[1] session id
-- Returns added | present | gone (no meta: nothing written) | invalid:<why>.
-- The entry is {"createdAt": <the meta's createdAt>}, as the Go service writes it.

local bad = ss_check_types({KEYS[1], 'string', KEYS[2], 'hash'})
if bad then
  return bad
end
local raw = redis.call('GET', KEYS[1])
if not raw then
  return 'gone'
end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  return 'present'
end
local ok, meta = pcall(cjson.decode, raw)
if not ok or type(meta) ~= 'table' or type(meta['createdAt']) ~= 'string' then
  return 'invalid:meta has no createdAt time'
end
redis.call('HSET', KEYS[2], ARGV[1], '{"createdAt":' .. cjson.encode(meta['createdAt']) .. '}')
return 'added'
