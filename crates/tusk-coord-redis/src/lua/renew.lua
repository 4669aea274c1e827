-- KEYS: lease. ARGV: token, lease ttl in ms. Returns 1 if renewed, 0 if the lease is lost.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
