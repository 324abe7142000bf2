-- legacy_create: create a legacy session unless its field exists (Go overwrites; we do not).
-- KEYS[1] sess:{app}:<user>  KEYS[2] ss:info:{app}:<user>:<sid>
-- ARGV[1] session id  ARGV[2] SessionState JSON  ARGV[3] session ttl ms (0 = none)
-- Returns 1 when created, 0 when the session exists, invalid:<why> on a wrong key type.
-- A `migrated` mark left by an earlier incarnation is cleared: the new session owns the id.

local bad = ss_check_types({KEYS[1], 'hash', KEYS[2], 'hash'})
if bad then
  return bad
end
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
redis.call('HDEL', KEYS[2], 'migrated')
ss_pexpire(KEYS[1], tonumber(ARGV[3]))
return 1
