-- Cancel tasks: ARGV[6] result expiry, then ids. Queued, scheduled and retrying tasks end at
-- once; running ones get a cancel request their worker sees on its next extend.
-- Returns per id: 'cancelled', 'requested', 'already_terminal' or 'not_found'.
local RX = ARGV[6]
local out = {}
for j = 7, #ARGV do
  local id = ARGV[j]
  local r = rkey(id)
  materialize(id)
  local f = redis.call('HMGET', r, 'st', 'att', 'pr', 'm', 'oid', 'n')
  local st = f[1]
  if not st then
    out[#out + 1] = 'not_found'
  elseif TERMINAL[st] then
    out[#out + 1] = 'already_terminal'
  elseif st == 'running' then
    if redis.call('HSETNX', r, 'cr', '1') == 1 then
      event(id, 'cancel_requested', f[2], f[5], '', f[6])
    end
    out[#out + 1] = 'requested'
  else
    -- A scheduled task may already sit in a ready set (promoted when it became due).
    ready_remove(f[3], f[4])
    redis.call('ZREM', K .. 'sched', id)
    finish(id, 'cancelled', '', '', RX, f[2], f[5], '', '', nil, f[6])
    out[#out + 1] = 'cancelled'
  end
end
flush()
return out
