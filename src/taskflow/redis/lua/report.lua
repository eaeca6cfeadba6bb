-- Progress and yielded values of running tasks: ARGV[6] = count, then per update: id, token,
-- encoded progress ('' = none), progress text for the event, number of yields, the yields.
-- Returns per update 1 or 0.
local n = tonumber(ARGV[6])
local out = {}
local b = 7
for _ = 1, n do
  local id, tok, prog, ptext = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local ny = tonumber(ARGV[b + 4])
  local r = rkey(id)
  local t = hmget_named(r, {'st', 'tok', 'att', 'oid', 'n'})
  if t.st == 'running' and t.tok == tok then
    if prog ~= '' then
      redis.call('HSET', r, 'prog', prog)
      event(id, 'progress', t.att, t.oid, ptext, t.n)
    end
    if ny > 0 then redis.call('HSET', r, 'y', '1') end -- readers skip LRANGE without it
    for y = 1, ny do
      local len = redis.call('RPUSH', ykey(id), ARGV[b + 4 + y])
      event(id, 'yielded', t.att, t.oid, tostring(len - 1), t.n)
    end
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
  b = b + 5 + ny
end
flush()
return out
