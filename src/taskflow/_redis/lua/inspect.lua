-- Read-only queue facts: {generation, queued (due), scheduled (not yet due), running, dead,
-- earliest scheduled due time or '', earliest lease expiry or '', entries in the ready sets}.
-- Lapsed tasks waiting in a ready set for re-delivery count as running.
local ready = 0
for _, pr in ipairs(redis.call('ZRANGE', K .. 'prios', 0, -1)) do
  ready = ready + redis.call('ZCARD', K .. 'r:' .. pr)
end
local lapsed = redis.call('SCARD', K .. 'lap')
local queued = ready - lapsed + redis.call('ZCOUNT', K .. 'sched', '-inf', NOW)
local scheduled = redis.call('ZCOUNT', K .. 'sched', '(' .. NOW, '+inf')
local first_sched = redis.call('ZRANGE', K .. 'sched', 0, 0, 'WITHSCORES')
local first_run = redis.call('ZRANGE', K .. 'run', 0, 0, 'WITHSCORES')
return {redis.call('GET', K .. 'gen') or '0', queued, scheduled,
  redis.call('ZCARD', K .. 'run') + lapsed, redis.call('ZCARD', K .. 'dead'), first_sched[2] or '',
  first_run[2] or '', ready}
