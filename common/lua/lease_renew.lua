-- lease_renew: extend a lease only for the token that holds it.
-- KEYS[1] lease  ARGV[1] token  ARGV[2] ttl ms
-- Returns 1 when renewed, 0 when the lease is held by someone else or expired.

if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
