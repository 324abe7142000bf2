-- hashidx_index_prune: remove index entries whose session meta is gone.
-- KEYS[1] hashidx:sessidx:<app>:{<user>}, then one meta key per session id of ARGV
-- ARGV: the session ids, in the order of KEYS[2..]
-- Returns the number of entries removed (0 when the index is not a HASH).

if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then
  return 0
end
local n = 0
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    n = n + redis.call('HDEL', KEYS[1], ARGV[i - 1])
  end
end
return n
