-- KEYS: lease, upload hash, segment list, expiry index.
-- ARGV: token, purge_at, id, the notice the termination makes owed (JSON) or ''.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], 'state', 'gone', 'purge_at', ARGV[2])
redis.call('HDEL', KEYS[2], 'expires_at')
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[2], 'notice', ARGV[4])
else
  redis.call('HDEL', KEYS[2], 'notice')
end
redis.call('DEL', KEYS[3])
index_for_sweep(KEYS[2], KEYS[4], ARGV[3])
return 1
