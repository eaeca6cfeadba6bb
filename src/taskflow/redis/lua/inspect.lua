-- Read-only queue facts: {queued (due), scheduled (not yet due), running, dead,
-- earliest scheduled due time or '', earliest lease expiry or '', entries in the ready sets}.
-- Lapsed tasks waiting in a ready set for re-delivery count as running. With ARGV[6] = '1'
-- (stats, not next_due) the eighth value counts the tasks ended in the minute before NOW (see
-- count_finished in common.lua), by whole seconds; else it is 0. Named by `QueueFacts` in
-- taskflow/redis/_codec.py.
local ready = 0
for _, pr in ipairs(redis.call('ZRANGE', K .. 'prios', 0, -1)) do
  ready = ready + redis.call('ZCARD', K .. 'r:' .. pr)
end
local lapsed = redis.call('SCARD', K .. 'lap')
local queued = ready - lapsed + redis.call('ZCOUNT', K .. 'sched', '-inf', NOW)
local scheduled = redis.call('ZCOUNT', K .. 'sched', '(' .. NOW, '+inf')
local first_sched = redis.call('ZRANGE', K .. 'sched', 0, 0, 'WITHSCORES')
local first_run = redis.call('ZRANGE', K .. 'run', 0, 0, 'WITHSCORES')
local out = {queued, scheduled,
  redis.call('ZCARD', K .. 'run') + lapsed, redis.call('ZCARD', K .. 'dead'), first_sched[2] or '',
  first_run[2] or '', ready, 0}
if ARGV[6] == '1' then
  local now_s = math.floor(NOWN)
  local finished = 0
  local buckets = redis.call('HGETALL', K .. 'f1m')
  for j = 2, #buckets, 2 do
    local s, c = string.match(buckets[j], '^(%d+):(%d+)$')
    s = tonumber(s)
    if s and s > now_s - 60 and s <= now_s then finished = finished + tonumber(c) end
  end
  out[8] = finished
end
return out
