-- Enqueue a batch: ARGV[6] packs per message 8 fields: id, its queued form as the client
-- packed it (QF in common.lua: the message, state, priority, retries, dedup key and ttl, order
-- id, no-result flag, the inboxes to push its outcome to, as a result waiter's read would
-- register them, and the task name), priority, due time, scheduled flag, dedup key, order id,
-- task name (for the events; the queued form is not unpacked here).
-- Returns per message: the id now standing for it, and 1 if created (0: deduplicated).
--
-- Direct hand-off: a worker whose last claim found the queue dry is parked (claim.lua) with
-- its free capacity. While one is, and nothing else is claimable (no listed ready level, no
-- scheduled task due), a new ready task is claimed for it here, in this same atomic step, and
-- sent on its channel '{Q}:hand:<worker>': the worker runs it without a claim round trip.
-- PUBLISH says how many received it; none (the worker is gone or its connection dropped)
-- unparks the worker and queues its tasks as usual. A hand-off lost after the server sent it
-- is re-delivered when its lease lapses, like any claimed task whose worker vanished.
local A = unframe(ARGV[6])
local n = #A / 8
local seq = redis.call('INCRBY', K .. 'seq', n) - n -- reserve n sequence numbers at once
local out = {}
local woke = false

local parked = nil -- lazily: {{worker, free capacity, lease seconds, tasks}, ...}
local function parked_worker()
  if parked == nil then
    parked = {}
    local park = redis.call('HGETALL', K .. 'park')
    if #park > 0 and #redis.call('ZRANGE', K .. 'prios', 0, 0) == 0 then
      local s = redis.call('ZRANGE', K .. 'sched', 0, 0, 'WITHSCORES')[2]
      if not s or tonumber(s) > NOWN then
        for j = 1, #park, 2 do
          local free, lease = string.match(park[j + 1], '^(%d+) (.+)$')
          parked[#parked + 1] = {park[j], tonumber(free), lease, {}}
        end
      end
    end
  end
  local best = nil
  for _, w in ipairs(parked) do
    if w[2] > 0 and (best == nil or w[2] > best[2]) then best = w end
  end
  return best
end

for i = 0, n - 1 do
  local b = 1 + i * 8
  local id, q, pr, due, sched, dk, oid = A[b], A[b + 1], A[b + 2], A[b + 3], A[b + 4], A[b + 5],
    A[b + 6]
  local name = A[b + 7]
  local existing = nil
  if exists(id) then
    existing = id
  elseif dk ~= '' then
    local other = redis.call('HGET', K .. 'dedup', dk)
    if other then
      local f = read(other, 'st', 'fa', 'dt')
      if f[1] then
        if not TERMINAL[f[1]] then
          existing = other
        elseif f[3] and f[3] ~= '' and f[2] and tonumber(f[2]) + tonumber(f[3]) > NOWN then
          existing = other
        end
      end
    end
  end
  if existing then
    out[#out + 1] = existing
    out[#out + 1] = 0
  else
    seq = seq + 1
    local w = nil
    if sched ~= '1' then w = parked_worker() end
    if w then
      -- Stored as queued (its 'queued' event too) but not listed ready: claimed below.
      local x = cmsgpack.unpack(q)
      create(id, q, pr, due, sched, dk, oid, seq, x, name)
      w[2] = w[2] - 1
      local t = w[4]
      t[#t + 1] = {id, x[QF.msg], pr, due, string.format('%012x', seq) .. id, oid, name}
    else
      create(id, q, pr, due, sched, dk, oid, seq, false, name)
      woke = true -- a scheduled task too: idle workers shorten their sleep to its due time
    end
    out[#out + 1] = id
    out[#out + 1] = 1
  end
end

for _, w in ipairs(parked or {}) do
  local wid, tasks = w[1], w[4]
  if #tasks > 0 then
    local lx = string.format('%.17g', NOWN + tonumber(w[3]))
    local parts = {}
    for _, t in ipairs(tasks) do
      local id, msg = t[1], t[2]
      parts[#parts + 1] = #id .. ':' .. id .. #msg .. ':' .. msg
    end
    local got = redis.call(PUB, K .. 'hand:' .. wid, #lx .. ':' .. lx .. table.concat(parts))
    if got > 0 then
      for _, t in ipairs(tasks) do
        local id = t[1]
        redis.call('HSET', rkey(id), 'st', 'running', 'att', 1, 'tok', 1, 'sa', NOW, 'wid', wid,
          'lx', lx)
        zadd_later(K .. 'run', lx, id)
        event(id, 'running', 1, t[6], '', t[7])
      end
    else
      w[2] = 0
      for _, t in ipairs(tasks) do ready_add(t[3], t[4], t[5]) end
      woke = true
    end
  end
  if w[2] > 0 then
    redis.call('HSET', K .. 'park', wid, w[2] .. ' ' .. w[3])
  else
    redis.call('HDEL', K .. 'park', wid)
  end
end
flush()
if woke then wake_workers() end
return out
