-- KEYS: upload hash, expiry index. ARGV: id, meta json, length or '', expires_at or ''.
-- Returns 1 when created, 0 when the ID is taken.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'meta', ARGV[2], 'offset', 0, 'token', 0, 'seq', 0, 'state', 'active')
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'length', ARGV[3]) end
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], 'expires_at', ARGV[4])
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
end
return 1
