-- legacy_retire_user_state: delete a user's old user-state key once it was copied (migrate).
-- KEYS[1] userstate:{app}:<user>  KEYS[2] sess:{app}:<user>
-- ARGV: the field/value pairs copied
-- Returns retired | kept (the user still has legacy sessions) | changed (written since the
-- copy: nothing deleted).

if redis.call('TYPE', KEYS[2])['ok'] == 'hash' and redis.call('HLEN', KEYS[2]) > 0 then
  return 'kept'
end
if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then
  return 'changed'
end
if redis.call('HLEN', KEYS[1]) * 2 ~= #ARGV then
  return 'changed'
end
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) ~= ARGV[i + 1] then
    return 'changed'
  end
end
redis.call('DEL', KEYS[1])
return 'retired'
