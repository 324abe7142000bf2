-- legacy_delete: delete one legacy session: its sess and sesssum fields and its own keys.
-- KEYS[1] sess:{app}:<user>  KEYS[2] sesssum:{app}:<user>, then every key of the session to
-- DEL (event, trackidx, ss:applied, ss:info, each track ZSET)
-- ARGV[1] session id
-- Returns the number of fields and keys removed, or invalid:<why> (nothing written) when a
-- per-user HASH holds another Redis type. Deleting a missing session is not an error.

local bad = ss_check_types({KEYS[1], 'hash', KEYS[2], 'hash'})
if bad then
  return bad
end
local n = redis.call('HDEL', KEYS[1], ARGV[1]) + redis.call('HDEL', KEYS[2], ARGV[1])
for i = 3, #KEYS do
  n = n + redis.call('DEL', KEYS[i])
end
return n
