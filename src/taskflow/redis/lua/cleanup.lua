-- Delete records whose result expired before ARGV[6], and dedup entries past their window.
-- Bounded work per call, so a worker's periodic cleanup never blocks the server for long: at
-- most 5,000 records, and the next 1,000 dedup entries (HSCAN, resuming where the last call
-- stopped). A deleted flow task leaves its flow's index (`{Q}:fl:<flow>`). Returns the
-- deleted ids, then {flow, ...}: the flows whose index in this queue it emptied (the client
-- takes the queue out of their `flq` sets), if any.
local cutoff = ARGV[6]
local ids = redis.call('ZRANGEBYSCORE', K .. 'fin', '-inf', cutoff, 'LIMIT', 0, 5000)
local flows = {} -- flow id -> true: an index this call removed ids from
for _, id in ipairs(ids) do
  local fl = redis.call('HGET', rkey(id), 'fl')
  if fl then
    redis.call('ZREM', K .. 'fl:' .. fl, id)
    flows[fl] = true
  end
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
local emptied = {}
for fl in pairs(flows) do
  if redis.call('EXISTS', K .. 'fl:' .. fl) == 0 then emptied[#emptied + 1] = fl end
end
if #emptied > 0 then ids[#ids + 1] = emptied end
return ids
