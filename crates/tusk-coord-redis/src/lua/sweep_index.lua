-- Prepended to the scripts that change what the sweeper looks for.
-- Puts upload `id` in the sweep index at the time UploadRecord::sweep_at defines: an owed
-- notice's due time, else a tombstone's purge time or an active upload's expiry; or takes
-- it out when there is none.
local function index_for_sweep(up, expiry, id)
  local f = redis.call('HMGET', up, 'notice', 'state', 'purge_at', 'expires_at')
  local at
  if f[1] then
    at = cjson.decode(f[1]).due_at
  elseif f[2] == 'gone' then
    at = f[3]
  else
    at = f[4]
  end
  if at then
    redis.call('ZADD', expiry, at, id)
  else
    redis.call('ZREM', expiry, id)
  end
end
