-- KEYS: lease, upload hash, segment list, expiry index. ARGV: token, purge_at, id.
-- The tombstone stays in the expiry index under its purge time.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], 'state', 'gone', 'purge_at', ARGV[2])
redis.call('HDEL', KEYS[2], 'expires_at')
redis.call('DEL', KEYS[3])
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[3])
return 1
