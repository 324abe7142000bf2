-- hashidx_trim: remove the newest `count` conversations (events sharing a requestID).
-- KEYS[1] evtdata  KEYS[2] evtidx:time  KEYS[3] ss:applied
-- ARGV[1] rid  ARGV[2] count (>= 1)  ARGV[3] session ttl ms (for the request record)
-- Returns {status, deleted event JSON oldest first...}; status applied | duplicate | invalid:...
-- Events without a requestID are skipped. The walk continues across batches until a request
-- beyond the chosen ones appears, so every event of a chosen request is removed.

local data_key, idx_key, applied_key = KEYS[1], KEYS[2], KEYS[3]
local bad = ss_check_types({data_key, 'hash', idx_key, 'zset', applied_key, 'zset'})
if bad then
  return {bad}
end
if ss_recorded(applied_key, ARGV[1]) then
  return {'duplicate'}
end
local count = tonumber(ARGV[2])
local targets, ntargets = {}, 0
local doomed_ids, doomed_json = {}, {}
local hi = redis.call('ZCARD', idx_key) - 1
local stop = false
while hi >= 0 and not stop do
  local lo = math.max(0, hi - 99)
  local ids = redis.call('ZRANGE', idx_key, lo, hi)
  local vals = redis.call('HMGET', data_key, unpack(ids))
  for j = #ids, 1, -1 do
    local v = vals[j]
    if v then
      local ok, ev = pcall(cjson.decode, v)
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
        doomed_ids[#doomed_ids + 1] = ids[j]
        doomed_json[#doomed_json + 1] = v
      end
    end
  end
  hi = lo - 1
end
ss_del_members(data_key, idx_key, doomed_ids)
ss_record(applied_key, ARGV[1], SS_CODE.applied)
ss_keep(applied_key, tonumber(ARGV[3]))
ss_record_cap(applied_key)
local out = {'applied'}
for i = #doomed_json, 1, -1 do
  out[#out + 1] = doomed_json[i]
end
return out
