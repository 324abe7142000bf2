-- stream_dead_letter: move an entry that failed too often to the shard's dead-letter stream.
-- KEYS[1] shard stream  KEYS[2] shard failures  KEYS[3] shard dead-letter stream
-- ARGV[1] entry id  ARGV[2] encoded entry  ARGV[3] last error  ARGV[4] failure count
-- ARGV[5] session (app/user/sid, '' when unreadable)  ARGV[6] request id ('' when unreadable)
-- Returns the dead-letter entry id. The entry is acknowledged in the same step.

local id = redis.call('XADD', KEYS[3], '*', 'source', ARGV[1], 'e', ARGV[2],
  'error', ARGV[3], 'failures', ARGV[4], 'session', ARGV[5], 'rid', ARGV[6])
redis.call('XACK', KEYS[1], 'persist', ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return id
