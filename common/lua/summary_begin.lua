-- summary_begin: single-flight of summary runs per (session, filter key): take the lock, or
-- raise the dirty cut for the run in progress.
-- KEYS[1] ss:summary (HASH; fields per filter key f: l:f lock token, u:f lock deadline ms,
-- d:f dirty cut, h:f handled cut, c:f cut of the stored summary)  KEYS[2] the session's
-- meta STRING or sess HASH (the record's TTL follows it; 7 days when it has none)
-- ARGV[1] the request's filter key  ARGV[2] lock token  ARGV[3] the job's cut
-- ARGV[4] lock lifetime ms  ARGV[5] a holder token whose lock may be taken over (its worker
-- left the live-worker registry), or ''  ARGV[6..] the filter keys the run stores (targets)
-- Returns {'busy', handled cut, holder token} when a live lock is held by another run (the
-- dirty cut is raised to ARGV[3]: the holder runs once more to cover it); {'covered'} when
-- every target already has a stored summary at or past the run's cut; else {'run', cut to
-- run at}, the larger of the job's cut and a dirty cut left behind, with the lock taken.

local run_key, src = KEYS[1], KEYS[2]
local f, token, cut, lock_ms, steal = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local bad = ss_check_types({run_key, 'hash'})
if bad then
  return redis.error_reply(bad)
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local holder, deadline, dirty, handled = unpack(redis.call('HMGET', run_key,
  'l:' .. f, 'u:' .. f, 'd:' .. f, 'h:' .. f))
if holder and holder ~= token and holder ~= steal and tonumber(deadline or '0') > now then
  if not dirty or ss_id_cmp(dirty, cut) < 0 then
    redis.call('HSET', run_key, 'd:' .. f, cut)
  end
  return {'busy', handled or '', holder}
end
local at = cut
if dirty and ss_id_cmp(dirty, at) > 0 then
  at = dirty
end
local covered = true
for i = 6, #ARGV do
  local stored = redis.call('HGET', run_key, 'c:' .. ARGV[i])
  if not stored or ss_id_cmp(stored, at) < 0 then
    covered = false
    break
  end
end
if covered then
  redis.call('HDEL', run_key, 'l:' .. f, 'u:' .. f, 'd:' .. f)
  return {'covered'}
end
redis.call('HSET', run_key, 'l:' .. f, token, 'u:' .. f, tostring(now + lock_ms))
ss_follow_keep(run_key, src, lock_ms)
return {'run', at}
