-- Enqueue a batch: ARGV[6] packs per message 8 fields: id, its queued form as the client
-- packed it (QF in common.lua: the message, state, priority, retries, dedup key and ttl, order
-- id, no-result flag, the inboxes to push its outcome to, as a result waiter's read would
-- register them, and the task name), priority, due time, scheduled flag, dedup key, order id,
-- task name (for the events; the queued form is not unpacked here). ARGV[7], only when the
-- batch has flow messages: the result expiry of tasks this call ends (a hedge copy or join
-- whose task ended already is cancelled at once), and ARGV[8] packs each message's flow wiring
-- ('' for a plain task; see "Flows" in common.lua). A plain batch pays nothing for flows.
-- Returns per message: the id now standing for it, and 1 if created (0: deduplicated); then
-- the outbox marker (see with_outbox).
--
-- Direct hand-off: a worker whose last claim found the queue dry is parked (claim.lua) with
-- its free capacity. While one is, and nothing else is claimable (no listed ready level, no
-- scheduled task due), a new ready task is claimed for it here, in this same atomic step, and
-- sent on its channel '{Q}:hand:<worker>': the worker runs it without a claim round trip.
-- PUBLISH says how many received it; none (the worker is gone or its connection dropped)
-- unparks the worker and queues its tasks as usual. A hand-off lost after the server sent it
-- is re-delivered when its lease lapses, like any claimed task whose worker vanished.
-- A hand-off message carries at most PUSH_MAX_BYTES of task messages (see common.lua): the
-- first task that would pass it, and every task after it in this call, is stored and claimed
-- as usual (the worker is woken), so no hand-off jumps ahead of it.
local A = unframe(ARGV[6])
local RX = ARGV[7]
local FXS = ARGV[8] and unframe(ARGV[8]) -- nil for a plain batch
local F = 8 -- fields per message
local n = #A / F
local seq = redis.call('INCRBY', K .. 'seq', n) - n -- reserve n sequence numbers at once
local out = {}
local woke = false

-- The workers parked on this queue, read once per call when first needed: a list of
-- {wid = worker id, free = capacity left, lease = lease seconds, tasks = tasks handed to it,
-- bytes = their queued forms' size}
-- (empty unless nothing else is claimable).
local parked = nil
local handing = true -- false once a task was too large to hand off
local function parked_worker()
  if parked == nil then
    parked = {}
    local park = redis.call('HGETALL', K .. 'park')
    if #park > 0 and #redis.call('ZRANGE', K .. 'prios', 0, 0) == 0 then
      local s = redis.call('ZRANGE', K .. 'sched', 0, 0, 'WITHSCORES')[2]
      if not s or tonumber(s) > NOWN then
        for j = 1, #park, 2 do
          local free, lease = string.match(park[j + 1], '^(%d+) (.+)$')
          parked[#parked + 1] = {wid = park[j], free = tonumber(free), lease = lease, tasks = {},
            bytes = 0}
        end
      end
    end
  end
  local best = nil
  for _, w in ipairs(parked) do
    if w.free > 0 and (best == nil or w.free > best.free) then best = w end
  end
  return best
end

for i = 0, n - 1 do
  local b = 1 + i * F
  local id, q, pr, due, sched, dk, oid = A[b], A[b + 1], A[b + 2], A[b + 3], A[b + 4], A[b + 5],
    A[b + 6]
  local name = A[b + 7]
  local fx = FXS and FXS[i + 1] or ''
  local existing = nil
  if exists(id) then
    existing = id
  elseif dk ~= '' then
    local other = redis.call('HGET', K .. 'dedup', dk)
    if other then
      local t = load(other, {'st', 'fa', 'dt'})
      if t.st then
        if not TERMINAL[t.st] then
          existing = other
        elseif t.dt and t.dt ~= '' and t.fa and tonumber(t.fa) + tonumber(t.dt) > NOWN then
          existing = other
        end
      end
    end
  end
  if existing then
    out[#out + 1] = existing
    out[#out + 1] = 0
  elseif fx ~= '' then
    seq = seq + 1
    local listed = flows().create_flow(id, q, pr, due, sched, dk, oid, seq, name, fx, RX)
    if listed then woke = true end
    out[#out + 1] = id
    out[#out + 1] = 1
  else
    seq = seq + 1
    local w = nil
    if sched ~= '1' and handing then w = parked_worker() end
    if w and w.bytes + #q > PUSH_MAX_BYTES then
      handing, w = false, nil
    elseif w then
      w.bytes = w.bytes + #q
    end
    local m = create(id, q, pr, due, sched, dk, oid, seq, w ~= nil, name)
    if w then -- its 'queued' event is written; stored below, once the hand-off is known
      w.free = w.free - 1
      w.tasks[#w.tasks + 1] = {id = id, pr = pr, due = due, m = m, oid = oid, name = name}
    else
      woke = true -- a scheduled task too: idle workers shorten their sleep to its due time
    end
    out[#out + 1] = id
    out[#out + 1] = 1
  end
end

-- Hand each parked worker its tasks: one message on its channel, a msgpack array
-- {lease expiry, id, message, id, message, ...} (`handed_off` in taskflow/redis/_codec.py).
for _, w in ipairs(parked or {}) do
  if #w.tasks > 0 then
    local lx = string.format('%.17g', NOWN + tonumber(w.lease))
    local forms = {} -- id -> queued form's fields
    local message = {lx}
    for _, t in ipairs(w.tasks) do
      local x = unpack_queued(NEWQ[t.id])
      forms[t.id] = x
      message[#message + 1] = t.id
      message[#message + 1] = x[QF.msg]
    end
    local got = redis.call(PUB, K .. 'hand:' .. w.wid, cmsgpack.pack(message))
    if got > 0 then -- claimed: its hash record starts here, running
      for _, t in ipairs(w.tasks) do
        hash_from(t.id, forms[t.id], t.m, 'running', 1, 1, 'sa', NOW, 'wid', w.wid, 'lx', lx,
          'od', NOW)
        zadd_later(K .. 'run', lx, t.id)
        event(t.id, 'running', 1, t.oid, '', t.name)
      end
    else -- nobody heard it: unpark the worker, store and list its tasks as usual
      w.free = 0
      for _, t in ipairs(w.tasks) do
        store_queued(t.id, NEWQ[t.id])
        ready_add(t.pr, t.due, t.m)
      end
      woke = true
    end
  end
  if w.free > 0 then
    redis.call('HSET', K .. 'park', w.wid, w.free .. ' ' .. w.lease)
  else
    redis.call('HDEL', K .. 'park', w.wid)
  end
end
settle()
flush()
if woke or FLOW_WOKE then wake_workers() end
return with_outbox(out)
