-- Record outcomes, checking each fencing token, and ack: ARGV[6] = count, then per outcome 7
-- fields: id, token, kind, encoded result, encoded error, retry at, result expires at ('' =
-- none). A terminal outcome publishes the task id on the queue's "done" channel.
-- Returns per outcome 1 (stored and acked) or 0 (refused: stale token or not running).
local n = tonumber(ARGV[6])
local out = {}
local woke = false
for i = 0, n - 1 do
  local b = 7 + i * 7
  local id, tok, kind = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  local res, err, at, rx = ARGV[b + 3], ARGV[b + 4], ARGV[b + 5], ARGV[b + 6]
  local r = rkey(id)
  local f = redis.call('HMGET', r, 'st', 'tok', 'att', 'pr', 'm', 'oid')
  if f[1] ~= 'running' or f[2] ~= tok then
    out[#out + 1] = 0
  else
    if TERMINAL[kind] then
      finish(id, kind, res, err, rx, f[3], f[6], '')
    elseif kind == 'retry' then
      redis.call('ZREM', K .. 'run', id)
      redis.call('HSET', r, 'st', 'retrying')
      if err ~= '' then redis.call('HSET', r, 'err', err) end
      local due = at
      if due == '' then due = NOW end
      redis.call('ZADD', K .. 'sched', due, id)
      event(id, 'retrying', f[3], f[6], '')
      if tonumber(due) <= NOWN then woke = true end
    else -- release: give it back and refund the attempt
      redis.call('ZREM', K .. 'run', id)
      redis.call('HSET', r, 'att', tonumber(f[3]) - 1)
      if at ~= '' and tonumber(at) > NOWN then
        redis.call('HSET', r, 'st', 'scheduled')
        redis.call('ZADD', K .. 'sched', at, id)
      else
        redis.call('HSET', r, 'st', 'queued')
        ready_add(f[4], NOW, f[5])
        woke = true
      end
      event(id, 'released', tonumber(f[3]) - 1, f[6], '')
    end
    out[#out + 1] = 1
  end
end
if woke then wake_workers() end
return out
