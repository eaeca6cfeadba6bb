-- Requeue dead letters as new tasks: ARGV[6] = count, ARGV[7] the result expiry of a task
-- this call ends (a flow copy whose task ended), then per task 8 fields: old id, new id, the
-- new task's queued form as the client packed it (QF in common.lua), priority, dedup key,
-- order id, task name (the old task's and the new one's), flow wiring ('' for a plain task; a
-- flow node requeued keeps its flow but no parents, see create_flow).
-- Returns per task the new id, or '' if the old one is not dead-lettered.
local n = tonumber(ARGV[6])
local RX = ARGV[7]
local out = {}
local woke = false
for i = 0, n - 1 do
  local b = 8 + i * 8
  local old, new, q, pr, dk, oid = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4],
    ARGV[b + 5]
  local name, fx = ARGV[b + 6], ARGV[b + 7]
  local t = hmget_named(rkey(old), {'st', 'att', 'oid'})
  if t.st == 'failed' and redis.call('ZSCORE', K .. 'dead', old)
      and not exists(new) then
    redis.call('ZREM', K .. 'dead', old)
    redis.call('HSET', rkey(old), 'rqd', new)
    if fx ~= '' then
      local seq = redis.call('INCR', K .. 'seq')
      flows().create_flow(new, q, pr, NOW, '0', dk, oid, seq, name, fx, RX)
    else
      create(new, q, pr, NOW, '0', dk, oid, redis.call('INCR', K .. 'seq'), false, name)
    end
    event(old, 'requeued', t.att, t.oid, new, name)
    out[#out + 1] = new
    woke = true
  else
    out[#out + 1] = ''
  end
end
settle()
flush()
if woke then wake_workers() end
return with_outbox(out)
