-- Delete records whose result expired before ARGV[6], and dedup entries past their window.
-- Bounded work per call, so a worker's periodic cleanup never blocks the server for long: at
-- most 5,000 records, and the next 1,000 dedup entries (HSCAN, resuming where the last call
-- stopped). Returns the deleted ids.
local cutoff = ARGV[6]
local ids = redis.call('ZRANGEBYSCORE', K .. 'fin', '-inf', cutoff, 'LIMIT', 0, 5000)
for _, id in ipairs(ids) do
  redis.call('DEL', rkey(id), ykey(id))
  zrem_later(K .. 'fin', id)
  zrem_later(K .. 'dead', id)
end
flush()
local scan = redis.call('HSCAN', K .. 'dedup', redis.call('GET', K .. 'dcur') or '0', 'COUNT', 1000)
redis.call('SET', K .. 'dcur', scan[1])
local dedup = scan[2]
for j = 1, #dedup, 2 do
  local f = read(dedup[j + 1], 'st', 'fa', 'dt')
  local drop = not f[1]
  if f[1] and TERMINAL[f[1]] then
    drop = not f[3] or f[3] == '' or tonumber(f[2]) + tonumber(f[3]) <= NOWN
  end
  if drop then redis.call('HDEL', K .. 'dedup', dedup[j]) end
end
return ids
