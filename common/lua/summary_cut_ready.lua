-- summary_cut_ready: has the persist group gone past a summary job's cut?
-- KEYS[1] shard persist stream
-- ARGV[1] the cut (a stream id)
-- Returns 1 when the persist group's last-delivered id is >= the cut and no entry <= the cut
-- is pending (every write queued before the job reached its outcome), else 0.

local cut = ARGV[1]
if ss_id_cmp(cut, '0-0') <= 0 then
  return 1
end
local groups = redis.pcall('XINFO', 'GROUPS', KEYS[1])
if type(groups) ~= 'table' or groups['err'] then
  return 1  -- no persist stream: nothing queued before the job is left to apply
end
local last = nil
for _, g in ipairs(groups) do
  local name, delivered = nil, nil
  for i = 1, #g, 2 do
    if g[i] == 'name' then
      name = g[i + 1]
    elseif g[i] == 'last-delivered-id' then
      delivered = g[i + 1]
    end
  end
  if name == 'persist' then
    last = delivered
  end
end
if not last or ss_id_cmp(last, cut) < 0 then
  return 0
end
local pending = redis.call('XPENDING', KEYS[1], 'persist')
if tonumber(pending[1]) > 0 and ss_id_cmp(pending[2], cut) <= 0 then
  return 0
end
return 1
