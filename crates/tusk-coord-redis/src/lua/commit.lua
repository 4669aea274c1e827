-- KEYS: lease, upload hash, segment list, expiry index.
-- ARGV: token, expected offset, added bytes, declared length or '', expires_at or '', id,
--       '1' to let go of the lease afterwards (whatever the outcome) or '0',
--       how many trailing segments the appended ones replace, the storage session or '',
--       a notice the commit makes owed (JSON) or '',
--       who made the commit and when (JSON) or '',
--       then one 'token:seq:len[:receipt]' per appended segment.
-- Returns {1} on success, {-1} if the lease is lost, {-2, offset} if the offset moved.
local holder = redis.call('GET', KEYS[1])
local function done(answer)
  if ARGV[7] == '1' and holder == ARGV[1] then redis.call('DEL', KEYS[1]) end
  return answer
end
if holder ~= ARGV[1] then return done({-1}) end
local offset = redis.call('HGET', KEYS[2], 'offset')
if offset ~= ARGV[2] then return done({-2, offset}) end
if ARGV[3] ~= '0' then redis.call('HINCRBY', KEYS[2], 'offset', ARGV[3]) end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[2], 'length', ARGV[4]) end
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[2], 'expires_at', ARGV[5])
else
  redis.call('HDEL', KEYS[2], 'expires_at')
end
if ARGV[8] ~= '0' then redis.call('LTRIM', KEYS[3], 0, -1 - tonumber(ARGV[8])) end
if ARGV[9] ~= '' then redis.call('HSET', KEYS[2], 'session', ARGV[9]) end
if ARGV[10] ~= '' then redis.call('HSET', KEYS[2], 'notice', ARGV[10]) end
if ARGV[11] ~= '' then redis.call('HSET', KEYS[2], 'last_commit', ARGV[11]) end
for i = 12, #ARGV do redis.call('RPUSH', KEYS[3], ARGV[i]) end
index_for_sweep(KEYS[2], KEYS[4], ARGV[6])
return done({1})
