-- Renew leases until ARGV[6]; then pairs of (id, token) from ARGV[7].
-- Returns per lease: 0 lost, 1 renewed, 2 renewed but cancellation requested.
local LX = ARGV[6]
local out = {}
for j = 7, #ARGV, 2 do
  local id, tok = ARGV[j], ARGV[j + 1]
  local r = rkey(id)
  local f = redis.call('HMGET', r, 'st', 'tok', 'cr')
  if f[1] == 'running' and f[2] == tok then
    redis.call('HSET', r, 'lx', LX)
    redis.call('ZADD', K .. 'run', 'XX', LX, id)
    if f[3] == '1' then out[#out + 1] = 2 else out[#out + 1] = 1 end
  else
    out[#out + 1] = 0
  end
end
return out
