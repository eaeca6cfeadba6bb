-- Record outcomes, checking each fencing token, and ack: ARGV[6] packs per outcome 8 fields: id, token, kind, encoded result, encoded error, error type, retry at, result expires
-- at ('' = none). A terminal outcome is pushed to its waiters' inboxes (see push_later).
-- Returns per outcome 1 (stored and acked) or 0 (refused: stale token or not running).
local A = unframe(ARGV[6])
local n = #A / 8
local out = {}
local woke = false
for i = 0, n - 1 do
  local b = 1 + i * 8
  local id, tok, kind = A[b], A[b + 1], A[b + 2]
  local res, err, etype, at, rx = A[b + 3], A[b + 4], A[b + 5], A[b + 6], A[b + 7]
  local r = rkey(id)
  local f = redis.call('HMGET', r, 'st', 'tok', 'att', 'pr', 'm', 'oid', 'nr', 'w', 'sa', 'wid',
    'prog', 'cr', 'y', 'n')
  if f[1] ~= 'running' or f[2] ~= tok then
    out[#out + 1] = 0
  else
    -- A lapsed lease not yet re-claimed: its old worker still owns the outcome.
    if take_lapsed(id) then ready_remove(f[4], f[5]) end
    if TERMINAL[kind] then
      finish(id, kind, res, err, rx, f[3], f[6], etype, f[7],
        {f[8], f[9], f[10], f[2], f[11], f[12], f[13]}, f[14])
    elseif kind == 'retry' then
      zrem_later(K .. 'run', id)
      if err ~= '' then
        redis.call('HSET', r, 'st', 'retrying', 'err', err)
      else
        redis.call('HSET', r, 'st', 'retrying')
      end
      local due = at
      if due == '' then due = NOW end
      zadd_later(K .. 'sched', due, id)
      event(id, 'retrying', f[3], f[6], etype, f[14])
      woke = true -- idle workers shorten their sleep to the retry's due time
    else -- release: give it back and refund the attempt, with its progress and yields
      zrem_later(K .. 'run', id)
      if f[11] or f[13] then redis.call('HDEL', r, 'prog', 'y') end
      if f[13] then redis.call('DEL', ykey(id)) end
      if at ~= '' and tonumber(at) > NOWN then
        redis.call('HSET', r, 'st', 'scheduled', 'att', tonumber(f[3]) - 1)
        zadd_later(K .. 'sched', at, id)
        woke = true
      else
        redis.call('HSET', r, 'st', 'queued', 'att', tonumber(f[3]) - 1)
        local due = at
        if due == '' then due = NOW end
        ready_add(f[4], due, f[5])
        woke = true
      end
      event(id, 'released', tonumber(f[3]) - 1, f[6], '', f[14])
    end
    out[#out + 1] = 1
  end
end
flush()
if woke then wake_workers() end
return out
