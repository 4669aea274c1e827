-- KEYS: lease, upload hash, segment list, expiry index.
-- ARGV: token, id, the notice now owed (JSON) or '' once delivered.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[2], 'notice', ARGV[3])
else
  redis.call('HDEL', KEYS[2], 'notice')
end
index_for_sweep(KEYS[2], KEYS[4], ARGV[2])
return 1
