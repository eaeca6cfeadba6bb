-- Cancel tasks: ARGV[6] result expiry, then ids. Queued, scheduled and retrying tasks end at
-- once; running ones get a cancel request their worker sees on its next extend.
-- Returns per id: 'cancelled', 'requested', 'already_terminal' or 'not_found'.
local RX = ARGV[6]
local out = {}
for j = 7, #ARGV do
  local id = ARGV[j]
  local r = rkey(id)
  hash_before_end(id, RX) -- one that cannot be read is failed there: 'already_terminal'
  local t = hmget_named(r, {'st', 'att', 'pr', 'm', 'oid', 'n'})
  local st = t.st
  if not st then
    out[#out + 1] = 'not_found'
  elseif TERMINAL[st] then
    out[#out + 1] = 'already_terminal'
  elseif st == 'running' then
    if redis.call('HSETNX', r, 'cr', '1') == 1 then
      event(id, 'cancel_requested', t.att, t.oid, '', t.n)
    end
    out[#out + 1] = 'requested'
  else
    -- A scheduled task may already sit in a ready set (promoted when it became due).
    ready_remove(t.pr, t.m)
    redis.call('ZREM', K .. 'sched', id)
    finish(id, 'cancelled', '', '', RX, t.att, t.oid, '', '', nil, t.n)
    out[#out + 1] = 'cancelled'
  end
end
flush()
return out
