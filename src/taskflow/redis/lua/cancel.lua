-- Cancel tasks: ARGV[6] result expiry, then ids. Queued, scheduled, retrying and waiting tasks
-- end at once (their end reaching their linked tasks, see settle); running ones get a cancel
-- request their worker sees on its next extend.
-- Returns per id: 'cancelled', 'requested', 'already_terminal' or 'not_found'; then the outbox
-- marker (see with_outbox).
local RX = ARGV[6]
local out = {}
for j = 7, #ARGV do
  local id = ARGV[j]
  local r = rkey(id)
  hash_before_end(id, RX) -- one that cannot be read is failed there: 'already_terminal'
  local t = hmget_named(r, {'st', 'att', 'pr', 'm', 'oid', 'n', 'fx', 'ob'})
  note_links(id, t.fx, t.ob)
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
    flows().unlist(id, t)
    finish(id, 'cancelled', '', '', RX, t.att, t.oid, '', '', nil, t.n)
    out[#out + 1] = 'cancelled'
  end
end
settle()
flush()
if FLOW_WOKE then wake_workers() end
return with_outbox(out)
