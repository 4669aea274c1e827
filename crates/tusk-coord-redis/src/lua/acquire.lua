-- KEYS: upload hash, lease, segment list. ARGV: lease ttl in ms.
-- Returns {token, record hash as a flat list, segments} when taken, {0} when another holder
-- has the lease, {-1} for no such upload. Tokens count per upload and only grow: they live
-- in the upload's own hash. Returning the record saves the new holder a round trip.
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {0} end
local token = redis.call('HINCRBY', KEYS[1], 'token', 1)
redis.call('SET', KEYS[2], token, 'PX', ARGV[1])
return {token, redis.call('HGETALL', KEYS[1]), redis.call('LRANGE', KEYS[3], 0, -1)}
