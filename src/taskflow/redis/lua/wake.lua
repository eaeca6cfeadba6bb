-- Make waiting tasks claimable now (`Broker.wake`): ARGV[6..] task ids. A task listed in 'sched'
-- (scheduled, retrying, or released until later) leaves it for its ready set, scored by its first
-- due time ('od', kept since its first claim; NOW if it was never claimed) under its first
-- ready-set member, so it takes the place of the ready order it would have had. A released task
-- reads 'queued' again. Every other task (ready already, running, ended, unknown) is left alone.
-- Returns how many tasks were woken; idle workers hear of them as of an enqueue.
local woken = 0
for j = 6, #ARGV do
  local id = ARGV[j]
  if redis.call('ZSCORE', K .. 'sched', id) then
    local t = load(id, {'st', 'pr', 'm', 'od'})
    if t.st == 'scheduled' or t.st == 'retrying' then
      local due = t.od
      if not due or tonumber(due) > NOWN then due = NOW end
      redis.call('ZREM', K .. 'sched', id)
      ready_add(t.pr, due, t.m)
      if t.st == 'scheduled' and redis.call('EXISTS', rkey(id)) == 1 then
        redis.call('HSET', rkey(id), 'st', 'queued')
      end
      woken = woken + 1
    end
  end
end
flush()
if woken > 0 then wake_workers() end
return woken
