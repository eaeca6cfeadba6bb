-- Named coordination leases, one hash per name: owner, token, expiry (caller's time).
-- ARGV: op ('acquire' | 'renew' | 'release'), owner, token, expires at, now.
-- acquire returns the token or false; renew/release return 1 or 0.
local key = KEYS[1]
local op, owner, token, exp, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local stored = redis.call('HMGET', key, 'owner', 'tok', 'exp')
local holder, held_tok, held_exp = stored[1], stored[2], stored[3]
local held = holder and holder ~= '' and tonumber(held_exp) > now
if op == 'acquire' then
  if held and holder ~= owner then return false end
  local tok = tonumber(held_tok or '0')
  if not held then tok = tok + 1 end
  redis.call('HSET', key, 'owner', owner, 'tok', tok, 'exp', exp)
  return tok
elseif op == 'renew' then
  if holder == owner and held_tok == token then
    redis.call('HSET', key, 'exp', exp)
    return 1
  end
  return 0
else
  if holder == owner and held_tok == token and owner ~= '' then
    redis.call('HSET', key, 'owner', '', 'exp', '0')
    return 1
  end
  return 0
end
