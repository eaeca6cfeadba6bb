-- Record outcomes, checking each fencing token, and ack: ARGV[6] packs per outcome 8 fields: id, token, kind, encoded result, encoded error, error type, retry at, result expires
-- at ('' = none). A terminal outcome is pushed to its waiters' inboxes (see push_later).
-- Returns per outcome 1 (stored and acked) or 0 (refused: stale token or not running), then
-- the outbox marker (see with_outbox). A WAIT makes the task WAITING for its join (`jn`);
-- a WAIT from a run whose cancel was requested ends it CANCELLED instead (the client sends the
-- result expiry with every WAIT). Every end reaches the tasks linked to it (`settle` in
-- common.lua).
-- ARGV[7]: the error log's length. A RETRY or FAILED outcome with an error adds the failed
-- attempt to the queue's error log (the stream "errors", trimmed exactly: failures are rare,
-- the trim cheap): time, id, name, attempt, worker id, encoded error, retried ("1") or not.
local ERRMAX = ARGV[7]
local function log_error(id, att, wid, name, err, retried)
  if err == '' then return end
  redis.call('XADD', K .. 'errors', 'MAXLEN', ERRMAX, '*', 't', NOW, 'i', id,
    'n', name or '', 'a', att, 'w', wid or '', 'e', err, 'r', retried)
end
local A = unframe(ARGV[6])
local n = #A / 8
local out = {}
local woke = false
for i = 0, n - 1 do
  local b = 1 + i * 8
  local id, tok, kind = A[b], A[b + 1], A[b + 2]
  local res, err, etype, at, rx = A[b + 3], A[b + 4], A[b + 5], A[b + 6], A[b + 7]
  local r = rkey(id)
  local st, cur_tok, att, pr, m, oid, nr, w, prog, y, name, wid, fx = unpack(
    redis.call('HMGET', r, 'st', 'tok', 'att', 'pr', 'm', 'oid', 'nr', 'w', 'prog', 'y', 'n',
      'wid', 'fx'))
  if st ~= 'running' or cur_tok ~= tok then
    out[#out + 1] = 0
  else
    if fx then note_links(id, fx, redis.call('HGET', r, 'ob')) end
    local jn, cr = nil, nil -- read for a WAIT only
    if kind == 'wait' then jn, cr = unpack(redis.call('HMGET', r, 'jn', 'cr')) end
    -- A lapsed lease not yet re-claimed: its old worker still owns the outcome.
    if take_lapsed(id) then ready_remove(pr, m) end
    if kind == 'failed' then log_error(id, att, wid, name, err, '0') end
    if kind == 'wait' and cr == '1' then -- a cancel was requested: not lost to the wait
      kind = 'cancelled'
      res, err, etype = '', '', ''
    end
    if TERMINAL[kind] then
      if fx and (kind == 'done' or kind == 'failed') then REPORTED[id] = true end
      finish(id, kind, res, err, rx, att, oid, etype, nr, w or false, name)
    elseif kind == 'retry' then
      log_error(id, att, wid, name, err, '1')
      zrem_later(K .. 'run', id)
      if err ~= '' then
        redis.call('HSET', r, 'st', 'retrying', 'err', err)
      else
        redis.call('HSET', r, 'st', 'retrying')
      end
      local due = at
      if due == '' then due = NOW end
      zadd_later(K .. 'sched', due, id)
      event(id, 'retrying', att, oid, etype, name)
      woke = true -- idle workers shorten their sleep to the retry's due time
    elseif kind == 'wait' then -- its join's end ends it (see adopt in common.lua)
      zrem_later(K .. 'run', id)
      redis.call('HSET', r, 'st', 'waiting')
      redis.call('HDEL', r, 'wid', 'lx')
      zadd_later(K .. 'wait', tonumber(string.sub(m or '', 1, 12), 16) or 0, id)
      event(id, 'waiting', att, oid, jn or '', name)
    else -- release: give it back and refund the attempt, with its progress and yields
      zrem_later(K .. 'run', id)
      if prog or y then redis.call('HDEL', r, 'prog', 'y') end
      if y then redis.call('DEL', ykey(id)) end
      if at ~= '' and tonumber(at) > NOWN then
        redis.call('HSET', r, 'st', 'scheduled', 'att', tonumber(att) - 1)
        zadd_later(K .. 'sched', at, id)
        woke = true
      else
        redis.call('HSET', r, 'st', 'queued', 'att', tonumber(att) - 1)
        local due = at
        if due == '' then due = NOW end
        ready_add(pr, due, m)
        woke = true
      end
      event(id, 'released', tonumber(att) - 1, oid, etype, name) -- why, if it says
    end
    out[#out + 1] = 1
    -- Applied before the next outcome: a hedge copy's end voids its primary's outcome.
    settle()
  end
end
flush()
if woke or FLOW_WOKE then wake_workers() end
return with_outbox(out)
