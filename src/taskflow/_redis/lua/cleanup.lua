-- Delete records whose result expired before ARGV[6], and dedup entries past their window.
-- Returns the deleted ids.
local cutoff = ARGV[6]
local ids = redis.call('ZRANGEBYSCORE', K .. 'fin', '-inf', cutoff)
for _, id in ipairs(ids) do
  redis.call('DEL', rkey(id), ykey(id))
  redis.call('ZREM', K .. 'fin', id)
  redis.call('ZREM', K .. 'dead', id)
end
local dedup = redis.call('HGETALL', K .. 'dedup')
for j = 1, #dedup, 2 do
  local f = redis.call('HMGET', rkey(dedup[j + 1]), 'st', 'fa', 'dt')
  local drop = not f[1]
  if f[1] and TERMINAL[f[1]] then
    drop = not f[3] or f[3] == '' or tonumber(f[2]) + tonumber(f[3]) <= NOWN
  end
  if drop then redis.call('HDEL', K .. 'dedup', dedup[j]) end
end
return ids
