-- KEYS: lease, upload hash. ARGV: token.
-- Returns the next write-target sequence number, or -1 if the lease is lost.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
return redis.call('HINCRBY', KEYS[2], 'seq', 1) - 1
