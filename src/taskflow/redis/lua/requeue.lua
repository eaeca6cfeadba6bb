-- Requeue dead letters as new tasks: ARGV[6] = count, then per task 7 fields: old id, new id,
-- the new task's queued form as the client packed it (QF in common.lua), priority, dedup key,
-- order id, task name (the old task's and the new one's).
-- Returns per task the new id, or '' if the old one is not dead-lettered.
local n = tonumber(ARGV[6])
local out = {}
local woke = false
for i = 0, n - 1 do
  local b = 7 + i * 7
  local old, new, q, pr, dk, oid = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4],
    ARGV[b + 5]
  local name = ARGV[b + 6]
  local t = hmget_named(rkey(old), {'st', 'att', 'oid'})
  if t.st == 'failed' and redis.call('ZSCORE', K .. 'dead', old)
      and not exists(new) then
    redis.call('ZREM', K .. 'dead', old)
    redis.call('HSET', rkey(old), 'rqd', new)
    create(new, q, pr, NOW, '0', dk, oid, redis.call('INCR', K .. 'seq'), false, name)
    event(old, 'requeued', t.att, t.oid, new, name)
    out[#out + 1] = new
    woke = true
  else
    out[#out + 1] = ''
  end
end
flush()
if woke then wake_workers() end
return out
