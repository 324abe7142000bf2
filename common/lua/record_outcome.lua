-- record_outcome: record a request's outcome decided outside the apply scripts.
-- KEYS[1] the session's request record (ss:applied)
-- ARGV[1] rid  ARGV[2] outcome code (see _lib.lua)  ARGV[3] ttl ms (0 = keep)
-- Returns 1 when recorded, 0 when the rid already had an outcome (first wins).

if ss_recorded(KEYS[1], ARGV[1]) then
  return 0
end
ss_record(KEYS[1], ARGV[1], tonumber(ARGV[2]))
ss_pexpire(KEYS[1], tonumber(ARGV[3]))
ss_record_cap(KEYS[1])
return 1
