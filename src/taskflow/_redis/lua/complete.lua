-- Record outcomes, checking each fencing token, and ack: ARGV[6] = count, then per outcome 8
-- fields: id, token, kind, encoded result, encoded error, error type, retry at, result expires
-- at ('' = none). A terminal outcome publishes the task id on the queue's "done" channel.
-- Returns per outcome 1 (stored and acked) or 0 (refused: stale token or not running).
local n = tonumber(ARGV[6])
local out = {}
local woke = false
for i = 0, n - 1 do
  local b = 7 + i * 8
  local id, tok, kind = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  local res, err, etype, at, rx = ARGV[b + 3], ARGV[b + 4], ARGV[b + 5], ARGV[b + 6], ARGV[b + 7]
  local r = rkey(id)
  local f = redis.call('HMGET', r, 'st', 'tok', 'att', 'pr', 'm', 'oid')
  if f[1] ~= 'running' or f[2] ~= tok then
    out[#out + 1] = 0
  else
    -- A lapsed lease not yet re-claimed: its old worker still owns the outcome.
    if redis.call('SREM', K .. 'lap', id) == 1 then ready_remove(f[4], f[5]) end
    if TERMINAL[kind] then
      finish(id, kind, res, err, rx, f[3], f[6], etype)
    elseif kind == 'retry' then
      redis.call('ZREM', K .. 'run', id)
      redis.call('HSET', r, 'st', 'retrying')
      if err ~= '' then redis.call('HSET', r, 'err', err) end
      local due = at
      if due == '' then due = NOW end
      redis.call('ZADD', K .. 'sched', due, id)
      event(id, 'retrying', f[3], f[6], etype)
      if tonumber(due) <= NOWN then woke = true end
    else -- release: give it back and refund the attempt
      redis.call('ZREM', K .. 'run', id)
      redis.call('HSET', r, 'att', tonumber(f[3]) - 1)
      if at ~= '' and tonumber(at) > NOWN then
        redis.call('HSET', r, 'st', 'scheduled')
        redis.call('ZADD', K .. 'sched', at, id)
      else
        redis.call('HSET', r, 'st', 'queued')
        local due = at
        if due == '' then due = NOW end
        ready_add(f[4], due, f[5])
        woke = true
      end
      event(id, 'released', tonumber(f[3]) - 1, f[6], '')
    end
    out[#out + 1] = 1
  end
end
if woke then wake_workers() end
return out
