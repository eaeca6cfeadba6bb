-- Claim up to ARGV[6] messages under a lease until ARGV[7] for worker ARGV[8].
-- ARGV[9]: result expiry for tasks this call ends (lease lapsed with no attempt left, or a
-- cancel was requested); ARGV[10]: the encoded "LeaseExpired" error.
-- Steps: recover lapsed leases, promote due scheduled/retrying tasks, pop by priority then
-- due time then enqueue order, mark each running with attempt + 1 and token + 1.
-- Returns {generation at start, id, token, attempt, message, id, token, ...}.
local limit = tonumber(ARGV[6])
local LX, WID, RX, LEASE_ERR = ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local out = {redis.call('GET', K .. 'gen') or '0'}

local lapsed = redis.call('ZRANGEBYSCORE', K .. 'run', '-inf', NOW, 'WITHSCORES')
for j = 1, #lapsed, 2 do
  local id, at = lapsed[j], lapsed[j + 1]
  local f = redis.call('HMGET', rkey(id), 'st', 'att', 'rt', 'cr', 'pr', 'm', 'oid')
  if f[1] ~= 'running' then
    redis.call('ZREM', K .. 'run', id)
  elseif f[4] == '1' then
    finish(id, 'cancelled', '', '', RX, f[2], f[7], 'lease expired after a cancel request')
  elseif tonumber(f[2]) >= tonumber(f[3]) + 1 then
    finish(id, 'failed', '', LEASE_ERR, RX, f[2], f[7], 'lease expired, no attempt left')
  else
    redis.call('ZREM', K .. 'run', id)
    redis.call('HSET', rkey(id), 'st', 'queued')
    ready_add(f[5], at, f[6])
    event(id, 'released', f[2], f[7], 'lease expired')
  end
end

local due = redis.call('ZRANGEBYSCORE', K .. 'sched', '-inf', NOW, 'WITHSCORES')
for j = 1, #due, 2 do
  local id, at = due[j], due[j + 1]
  redis.call('ZREM', K .. 'sched', id)
  local f = redis.call('HMGET', rkey(id), 'st', 'pr', 'm')
  if f[1] == 'scheduled' or f[1] == 'retrying' then
    redis.call('HSET', rkey(id), 'st', 'queued')
    ready_add(f[2], at, f[3])
  end
end

local need = limit
local prios = redis.call('ZRANGE', K .. 'prios', 0, -1)
for _, pr in ipairs(prios) do
  if need <= 0 then break end
  local rk = K .. 'r:' .. pr
  while need > 0 do
    local ms = redis.call('ZRANGE', rk, 0, need - 1)
    if #ms == 0 then break end
    redis.call('ZREMRANGEBYRANK', rk, 0, #ms - 1)
    for _, m in ipairs(ms) do
      local id = string.sub(m, 13)
      local r = rkey(id)
      local f = redis.call('HMGET', r, 'st', 'att', 'tok', 'msg', 'oid')
      if f[1] == 'queued' then
        local att = tonumber(f[2]) + 1
        local tok = tonumber(f[3]) + 1
        redis.call('HSET', r, 'st', 'running', 'att', att, 'tok', tok, 'sa', NOW, 'wid', WID,
          'lx', LX)
        redis.call('ZADD', K .. 'run', LX, id)
        event(id, 'running', att, f[5], '')
        out[#out + 1] = id
        out[#out + 1] = tok
        out[#out + 1] = att
        out[#out + 1] = f[4]
        need = need - 1
      end
    end
  end
  if redis.call('EXISTS', rk) == 0 then redis.call('ZREM', K .. 'prios', pr) end
end
return out
