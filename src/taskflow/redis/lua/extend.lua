-- Renew leases until ARGV[6]; then pairs of (id, token) from ARGV[7].
-- Returns per lease: 0 lost, 1 renewed, 2 renewed but cancellation requested.
-- A lapsed lease not yet claimed by another worker is taken back (out of the ready set).
local LX = ARGV[6]
local out = {}
for j = 7, #ARGV, 2 do
  local id, tok = ARGV[j], ARGV[j + 1]
  local r = rkey(id)
  local st, cur_tok, cr, pr, m = unpack(redis.call('HMGET', r, 'st', 'tok', 'cr', 'pr', 'm'))
  if st == 'running' and cur_tok == tok then
    redis.call('HSET', r, 'lx', LX)
    if take_lapsed(id) then ready_remove(pr, m) end
    zadd_later(K .. 'run', LX, id)
    if cr == '1' then out[#out + 1] = 2 else out[#out + 1] = 1 end
  else
    out[#out + 1] = 0
  end
end
flush()
return out
