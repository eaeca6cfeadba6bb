-- Read-only queue facts. With ARGV[6] = 'due' (for next_due), only what an idle worker needs,
-- in three reads: {1 if a ready level is listed (claimable work, or a level a claim has yet to
-- find empty) else 0, earliest scheduled due time or '', earliest lease expiry or ''}, named by
-- `NextDue` in taskflow/redis/_codec.py. Else (for stats) {queued (due), scheduled (not yet
-- due), running, dead, earliest scheduled due time or '', earliest lease expiry or '', entries
-- in the ready sets, tasks ended in the minute before NOW (see count_finished in common.lua,
-- by whole seconds), waiting tasks (flows)}, named by `QueueFacts` there. Lapsed tasks waiting in a ready set for
-- re-delivery count as running.
local first_sched = redis.call('ZRANGE', K .. 'sched', 0, 0, 'WITHSCORES')
local first_run = redis.call('ZRANGE', K .. 'run', 0, 0, 'WITHSCORES')
if ARGV[6] == 'due' then
  local listed = #redis.call('ZRANGE', K .. 'prios', 0, 0) > 0
  return {listed and 1 or 0, first_sched[2] or '', first_run[2] or ''}
end
local ready = 0
for _, pr in ipairs(redis.call('ZRANGE', K .. 'prios', 0, -1)) do
  ready = ready + redis.call('ZCARD', K .. 'r:' .. pr)
end
local lapsed = redis.call('SCARD', K .. 'lap')
local queued = ready - lapsed + redis.call('ZCOUNT', K .. 'sched', '-inf', NOW)
local scheduled = redis.call('ZCOUNT', K .. 'sched', '(' .. NOW, '+inf')
local now_s = math.floor(NOWN)
local finished = 0
local buckets = redis.call('HGETALL', K .. 'f1m')
for j = 2, #buckets, 2 do
  local s, c = string.match(buckets[j], '^(%d+):(%d+)$')
  s = tonumber(s)
  if s and s > now_s - 60 and s <= now_s then finished = finished + tonumber(c) end
end
return {queued, scheduled, redis.call('ZCARD', K .. 'run') + lapsed,
  redis.call('ZCARD', K .. 'dead'), first_sched[2] or '', first_run[2] or '', ready, finished,
  redis.call('ZCARD', K .. 'wait')}
