-- legacy_trim: remove the newest `count` conversations (events sharing a requestID).
-- KEYS[1] event:{app}:<user>:<sid>  KEYS[2] sess:{app}:<user>  KEYS[3] sesssum:{app}:<user>
-- KEYS[4] ss:applied  KEYS[5] ss:info
-- ARGV[1] session id  ARGV[2] rid  ARGV[3] count (>= 1)  ARGV[4] session ttl ms
-- Returns {status, deleted event JSON oldest first...}; status applied | duplicate |
-- session_gone | migrated | invalid:<why>. Events without a requestID are skipped; the walk
-- continues across batches until a request beyond the chosen ones appears. The sess, event
-- and sesssum keys get the session TTL (as the Go service).

local event_key, sess_key, sum_key, applied_key, info_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local sid, rid = ARGV[1], ARGV[2]
local ttl_ms = tonumber(ARGV[4])
local bad = ss_check_types({event_key, 'zset', sess_key, 'hash', sum_key, 'hash',
  applied_key, 'zset', info_key, 'hash'})
if bad then
  return {bad}
end
if ss_recorded(applied_key, rid) then
  return {'duplicate'}
end
if redis.call('HEXISTS', sess_key, sid) == 0 then
  if redis.call('HEXISTS', info_key, 'migrated') == 1 then
    return {'migrated'}
  end
  return {'session_gone'}
end
local count = tonumber(ARGV[3])
local targets, ntargets = {}, 0
local doomed = {}
local hi = redis.call('ZCARD', event_key) - 1
local stop = false
while hi >= 0 and not stop do
  local lo = math.max(0, hi - 99)
  local members = redis.call('ZRANGE', event_key, lo, hi)
  for j = #members, 1, -1 do
    local ok, ev = pcall(cjson.decode, members[j])
    local rq = ok and type(ev) == 'table' and ev['requestID']
    if type(rq) == 'string' and rq ~= '' then
      if not targets[rq] then
        if ntargets >= count then
          stop = true
          break
        end
        targets[rq] = true
        ntargets = ntargets + 1
      end
      doomed[#doomed + 1] = members[j]
    end
  end
  hi = lo - 1
end
for i = 1, #doomed, 500 do
  redis.call('ZREM', event_key, unpack(doomed, i, math.min(i + 499, #doomed)))
end
for _, k in ipairs({sess_key, event_key, sum_key}) do
  ss_pexpire(k, ttl_ms)
end
ss_record(applied_key, rid, SS_CODE.applied)
ss_keep(applied_key, ttl_ms)
ss_record_cap(applied_key)
local out = {'applied'}
for i = #doomed, 1, -1 do
  out[#out + 1] = doomed[i]
end
return out
