-- KEYS: upload hash, lease. ARGV: lease ttl in ms.
-- Returns the new fencing token, 0 when another holder has the lease, -1 for no such upload.
-- Tokens count per upload and only grow: they live in the upload's own hash.
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local token = redis.call('HINCRBY', KEYS[1], 'token', 1)
redis.call('SET', KEYS[2], token, 'PX', ARGV[1])
return token
