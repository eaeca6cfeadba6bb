-- Delete records whose result expired before ARGV[6], and dedup entries past their window.
-- Bounded work per call, so a worker's periodic cleanup never blocks the server for long: at
-- most 5,000 records, and the next 1,000 dedup entries (HSCAN, resuming where the last call
-- stopped). Returns the deleted ids.
local cutoff = ARGV[6]
local ids = redis.call('ZRANGEBYSCORE', K .. 'fin', '-inf', cutoff, 'LIMIT', 0, 5000)
for _, id in ipairs(ids) do
  redis.call('DEL', rkey(id), ykey(id), ckey(id), K .. 'ar:' .. id, K .. 'ob:' .. id)
  zrem_later(K .. 'fin', id)
  zrem_later(K .. 'dead', id)
end
flush()
local scan = redis.call('HSCAN', K .. 'dedup', redis.call('GET', K .. 'dcur') or '0', 'COUNT', 1000)
redis.call('SET', K .. 'dcur', scan[1])
local dedup = scan[2]
for j = 1, #dedup, 2 do
  local t = load(dedup[j + 1], {'st', 'fa', 'dt'})
  local drop = not t.st
  if t.st and TERMINAL[t.st] then
    drop = not t.dt or t.dt == '' or tonumber(t.fa) + tonumber(t.dt) <= NOWN
  end
  if drop then redis.call('HDEL', K .. 'dedup', dedup[j]) end
end
return ids
