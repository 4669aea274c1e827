-- KEYS: lease, upload hash, segment list, expiry index. ARGV: token, id.
-- Removes the record and ends the lease with it.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[2])
return 1
