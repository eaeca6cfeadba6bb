-- Purge: end up to ARGV[8] tasks of the queue that wait to run (queued, scheduled, retrying,
-- waiting for their parents or join; their ends reach their linked tasks, see settle)
-- as cancelled, with error ARGV[7] (encoded; its type ARGV[9] as the event's detail) and result
-- expiry ARGV[6]. Running tasks are left alone, lapsed ones waiting in a ready set for
-- re-delivery included. Returns the ids ended; fewer than ARGV[8] means none is left.
local RX, ERR, LIMIT, ETYPE = ARGV[6], ARGV[7], tonumber(ARGV[8]), ARGV[9]
local out = {}

-- End one waiting task; false if it is not waiting (running, or gone). One whose queued form
-- cannot be read is failed instead, and taken out of the ready set `rk` (member `m`) if given:
-- true, but not counted as purged.
local function drop(id, rk, m)
  if hash_before_end(id, RX) == nil then
    if rk then redis.call('ZREM', rk, m) end
    return true
  end
  local t = hmget_named(rkey(id), {'st', 'att', 'pr', 'm', 'oid', 'n', 'fx', 'ob'})
  local st = t.st
  if st ~= 'queued' and st ~= 'scheduled' and st ~= 'retrying' and st ~= 'waiting' then
    return false
  end
  note_links(id, t.fx, t.ob)
  -- A scheduled task may already sit in a ready set (promoted when it became due).
  flows().unlist(id, t)
  finish(id, 'cancelled', '', ERR, RX, t.att, t.oid, ETYPE, '', nil, t.n)
  out[#out + 1] = id
  return true
end

for _, pr in ipairs(redis.call('ZRANGE', K .. 'prios', 0, -1)) do
  local rk = K .. 'r:' .. pr
  local kept = 0 -- lapsed running tasks at the front of the set, left in place
  while #out < LIMIT do
    local members = redis.call('ZRANGE', rk, kept, kept + LIMIT - #out - 1)
    if #members == 0 then break end
    for _, m in ipairs(members) do
      -- A member is 12 hex digits of its enqueue sequence, then the id (see create).
      if not drop(string.sub(m, 13), rk, m) then kept = kept + 1 end
    end
  end
end
while #out < LIMIT do
  local ids = redis.call('ZRANGE', K .. 'sched', 0, LIMIT - #out - 1)
  if #ids == 0 then break end
  for _, id in ipairs(ids) do
    if not drop(id) then redis.call('ZREM', K .. 'sched', id) end -- a stale entry
  end
end
while #out < LIMIT do
  local ids = redis.call('ZRANGE', K .. 'wait', 0, LIMIT - #out - 1)
  if #ids == 0 then break end
  for _, id in ipairs(ids) do
    if not drop(id) then redis.call('ZREM', K .. 'wait', id) end -- a stale entry
  end
end
settle()
flush()
if FLOW_WOKE then wake_workers() end
return with_outbox(out)
