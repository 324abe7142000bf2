-- hashidx_delete: delete every key of one HashIdx session and its index entry.
-- KEYS[1] hashidx:sessidx, then every other key of the session to DEL (meta, evtdata,
-- evtidx, sesssum, trkidx:names, ss:applied, ss:info, each track's trkdata and trkidx:time)
-- ARGV[1] session id
-- Returns the number of keys deleted. Deleting a missing session is not an error.

local n = 0
for i = 2, #KEYS do
  n = n + redis.call('DEL', KEYS[i])
end
if redis.call('TYPE', KEYS[1])['ok'] == 'hash' then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return n
