-- KEYS: lease. ARGV: token. Deletes the lease only if it is still this holder's.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
