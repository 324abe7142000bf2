-- summary_end: a summary run ended (stored, nothing to do, failed or timed out): record the
-- cut it handled, then run again for a dirty cut or release the lock.
-- KEYS[1] ss:summary (see summary_begin.lua)  KEYS[2] the session's meta STRING or sess HASH
-- ARGV[1] the request's filter key  ARGV[2] lock token  ARGV[3] the cut the run handled
-- ('' = the run was abandoned: release the lock, keep the dirty cut)  ARGV[4] lock lifetime ms
-- Returns {'again', dirty cut} (the lock is renewed: run once more at that cut), {'done'},
-- or {'lost'} when the lock is no longer this run's.

local run_key, src = KEYS[1], KEYS[2]
local f, token, cut, lock_ms = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local holder, handled, dirty = unpack(redis.call('HMGET', run_key, 'l:' .. f, 'h:' .. f,
  'd:' .. f))
if cut ~= '' and ss_id_cmp(handled, cut) < 0 then
  redis.call('HSET', run_key, 'h:' .. f, cut)
  ss_follow_keep(run_key, src, lock_ms)
end
if holder ~= token then
  return {'lost'}
end
if cut ~= '' and dirty and ss_id_cmp(dirty, cut) > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('HSET', run_key, 'u:' .. f, tostring(now + lock_ms))
  ss_follow_keep(run_key, src, lock_ms)
  return {'again', dirty}
end
if cut == '' then
  redis.call('HDEL', run_key, 'l:' .. f, 'u:' .. f)
else
  redis.call('HDEL', run_key, 'l:' .. f, 'u:' .. f, 'd:' .. f)
end
return {'done'}
