-- Enqueue a batch: ARGV[6] packs per message 10 fields: id, encoded message, priority, due
-- time, scheduled flag, dedup key, dedup ttl, retries, order id, no-result flag.
-- Returns per message: the id now standing for it, and 1 if created (0: deduplicated).
local A = unframe(ARGV[6])
local n = #A / 10
local seq = redis.call('INCRBY', K .. 'seq', n) - n -- reserve n sequence numbers at once
local out = {}
local woke = false
for i = 0, n - 1 do
  local b = 1 + i * 10
  local id, msg, pr, due, sched = A[b], A[b + 1], A[b + 2], A[b + 3], A[b + 4]
  local dk, dt, rt, oid, nr = A[b + 5], A[b + 6], A[b + 7], A[b + 8], A[b + 9]
  local existing = nil
  if redis.call('EXISTS', rkey(id)) == 1 then
    existing = id
  elseif dk ~= '' then
    local other = redis.call('HGET', K .. 'dedup', dk)
    if other then
      local f = redis.call('HMGET', rkey(other), 'st', 'fa', 'dt')
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
    create(id, msg, pr, due, sched, dk, dt, rt, oid, nr, seq)
    out[#out + 1] = id
    out[#out + 1] = 1
    woke = true -- a scheduled task too: idle workers shorten their sleep to its due time
  end
end
flush()
if woke then wake_workers() end
return out
