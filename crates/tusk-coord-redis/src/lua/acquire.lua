-- KEYS: upload hash, lease, segment list. ARGV: lease ttl in ms, '1' to reserve the first
-- write target too.
-- Returns {token, record hash as a flat list, segments, first target's sequence number or -1}
-- when taken, {0} when another holder has the lease, {-1} for no such upload. Returning the
-- record, and reserving for a writer, each save the new holder a round trip.
--
-- Fencing tokens must never repeat for an upload ID, also after the ID is purged and
-- created again or after a failover to a replica that missed the last increments. So a
-- token is at least the Redis server's clock in microseconds, and above the upload's last
-- token: a purged and re-created ID, or a promoted replica, starts above every token handed
-- out before it (failovers take seconds, far more than the clocks of a primary and its
-- replicas differ). Microseconds stay exact in a Lua number (a double) until the year 2255.
redis.replicate_commands()
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {0} end
local now = redis.call('TIME')
local floor = tonumber(now[1]) * 1000000 + tonumber(now[2])
local last = tonumber(redis.call('HGET', KEYS[1], 'token') or '0')
local token = string.format('%.0f', math.max(last + 1, floor))
redis.call('HSET', KEYS[1], 'token', token)
redis.call('SET', KEYS[2], token, 'PX', ARGV[1])
local record = redis.call('HGETALL', KEYS[1])
local first = -1
if ARGV[2] == '1' then first = redis.call('HINCRBY', KEYS[1], 'seq', 1) - 1 end
return {tonumber(token), record, redis.call('LRANGE', KEYS[3], 0, -1), first}
