-- The worker registry. KEYS[1] entries hash (worker id -> encoded WorkerInfo), KEYS[2]
-- expiries sorted set (worker id -> expires_at); both share one hash tag.
-- ARGV[1] op: 'put' (ARGV[3..]: id, expires_at, entry, ...), 'list' or 'del' (ARGV[3..]: ids);
-- ARGV[2] now. Every op first deletes the entries lapsed at now (expires_at <= now).
-- 'list' returns the live entries as HGETALL does; 'put' and 'del' return how many lapsed.
local op, now = ARGV[1], ARGV[2]
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
if #lapsed > 0 then
  redis.call('ZREM', KEYS[2], unpack(lapsed))
  redis.call('HDEL', KEYS[1], unpack(lapsed))
end
if op == 'put' then
  for i = 3, #ARGV, 3 do
    redis.call('ZADD', KEYS[2], ARGV[i + 1], ARGV[i])
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
  end
elseif op == 'del' then
  for i = 3, #ARGV do
    redis.call('ZREM', KEYS[2], ARGV[i])
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
elseif op == 'list' then
  return redis.call('HGETALL', KEYS[1])
end
return #lapsed
