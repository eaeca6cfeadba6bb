-- Named coordination leases, one hash per name: owner, token, expiry (caller's time).
-- ARGV: op ('acquire' | 'renew' | 'release'), owner, token, expires at, now.
-- acquire returns the token or false; renew/release return 1 or 0.
local key = KEYS[1]
local op, owner, token, exp, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local f = redis.call('HMGET', key, 'owner', 'tok', 'exp')
local held = f[1] and f[1] ~= '' and tonumber(f[3]) > now
if op == 'acquire' then
  if held and f[1] ~= owner then return false end
  local tok = tonumber(f[2] or '0')
  if not held then tok = tok + 1 end
  redis.call('HSET', key, 'owner', owner, 'tok', tok, 'exp', exp)
  return tok
elseif op == 'renew' then
  if f[1] == owner and f[2] == token then
    redis.call('HSET', key, 'exp', exp)
    return 1
  end
  return 0
else
  if f[1] == owner and f[2] == token and owner ~= '' then
    redis.call('HSET', key, 'owner', '', 'exp', '0')
    return 1
  end
  return 0
end
