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
  local t = hmget_named(r, {'st', 'tok', 'att', 'pr', 'm', 'oid', 'nr', 'w', 'prog', 'y', 'n'})
  if t.st ~= 'running' or t.tok ~= tok then
    out[#out + 1] = 0
  else
    -- A lapsed lease not yet re-claimed: its old worker still owns the outcome.
    if take_lapsed(id) then ready_remove(t.pr, t.m) end
    if TERMINAL[kind] then
      finish(id, kind, res, err, rx, t.att, t.oid, etype, t.nr, t.w or false, t.n)
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
      event(id, 'retrying', t.att, t.oid, etype, t.n)
      woke = true -- idle workers shorten their sleep to the retry's due time
    else -- release: give it back and refund the attempt, with its progress and yields
      zrem_later(K .. 'run', id)
      if t.prog or t.y then redis.call('HDEL', r, 'prog', 'y') end
      if t.y then redis.call('DEL', ykey(id)) end
      if at ~= '' and tonumber(at) > NOWN then
        redis.call('HSET', r, 'st', 'scheduled', 'att', tonumber(t.att) - 1)
        zadd_later(K .. 'sched', at, id)
        woke = true
      else
        redis.call('HSET', r, 'st', 'queued', 'att', tonumber(t.att) - 1)
        local due = at
        if due == '' then due = NOW end
        ready_add(t.pr, due, t.m)
        woke = true
      end
      event(id, 'released', tonumber(t.att) - 1, t.oid, '', t.n)
    end
    out[#out + 1] = 1
  end
end
flush()
if woke then wake_workers() end
return out
