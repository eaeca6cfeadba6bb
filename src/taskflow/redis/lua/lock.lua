-- One reader/writer lock, following the rules of taskflow/abc/_coordination.py. Its keys share
-- the lock's hash tag (one slot):
--   KEYS[1] meta hash: tok (last fencing token, kept forever), seq (queue counter),
--           xh / xw (how many exclusive holders / waiters)
--   KEYS[2] holders hash: owner -> "<S|X>|<token>"     KEYS[3] holders' expiry zset
--   KEYS[4] waiters hash: owner -> "<S|X>|<since>"     KEYS[5] waiters' expiry zset
--   KEYS[6] queue zset: owner -> seq (FIFO order)
-- ARGV: op, now, expiry of what is granted or renewed (now + ttl), then the op's entries:
--   acquire: owner, mode, wait ('1'|'0') ...  -> token per entry (0: not granted)
--   renew:   owner, token ...                 -> 1 or 0 per entry
--   release: owner, token ...                 -> the owners granted
--   withdraw: owner ...                       -> the owners granted
--   state:   (none)                           -> n holders, then owner, mode, token, expiry
--            per holder, then owner, mode, since, expiry per waiter (queue order)
-- Every op first drops lapsed entries and grants the queue's head what is free (settle).
local meta, holders, holders_exp, waiters, waiters_exp, queue =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local op, now_arg, exp = ARGV[1], ARGV[2], ARGV[3]
local now = tonumber(now_arg)

local function count(field)
  return tonumber(redis.call('HGET', meta, field) or '0')
end

local function del_holder(owner)
  local v = redis.call('HGET', holders, owner)
  if not v then return false end
  if string.sub(v, 1, 1) == 'X' then redis.call('HINCRBY', meta, 'xh', -1) end
  redis.call('HDEL', holders, owner)
  redis.call('ZREM', holders_exp, owner)
  return true
end

local function del_waiter(owner)
  local v = redis.call('HGET', waiters, owner)
  if not v then return false end
  if string.sub(v, 1, 1) == 'X' then redis.call('HINCRBY', meta, 'xw', -1) end
  redis.call('HDEL', waiters, owner)
  redis.call('ZREM', waiters_exp, owner)
  redis.call('ZREM', queue, owner)
  return true
end

local function grant(owner, mode)
  local tok = redis.call('HINCRBY', meta, 'tok', 1)
  redis.call('HSET', holders, owner, mode .. '|' .. tok)
  redis.call('ZADD', holders_exp, exp, owner)
  if mode == 'X' then redis.call('HINCRBY', meta, 'xh', 1) end
  return tok
end

local function enqueue(owner, mode)
  local seq = redis.call('HINCRBY', meta, 'seq', 1)
  redis.call('HSET', waiters, owner, mode .. '|' .. now_arg)
  redis.call('ZADD', waiters_exp, exp, owner)
  redis.call('ZADD', queue, seq, owner)
  if mode == 'X' then redis.call('HINCRBY', meta, 'xw', 1) end
end

-- Grants the head of the queue what is free: the head exclusive waiter alone, or the run of
-- shared waiters up to the next exclusive one. Appends the owners granted to `granted`.
local function grant_head(granted)
  while true do
    local head = redis.call('ZRANGE', queue, 0, 0)[1]
    if not head then return end
    local mode = string.sub(redis.call('HGET', waiters, head), 1, 1)
    if mode == 'X' and redis.call('ZCARD', holders_exp) > 0 then return end
    if mode == 'S' and count('xh') > 0 then return end
    del_waiter(head)
    grant(head, mode)
    granted[#granted + 1] = head
    if mode == 'X' then return end
  end
end

local function settle(granted)
  for _, owner in ipairs(redis.call('ZRANGEBYSCORE', holders_exp, '-inf', now)) do
    del_holder(owner)
  end
  for _, owner in ipairs(redis.call('ZRANGEBYSCORE', waiters_exp, '-inf', now)) do
    del_waiter(owner)
  end
  grant_head(granted)
end

local function held_token(owner)
  local v = redis.call('HGET', holders, owner)
  return v and string.sub(v, 3)
end

local function request(owner, mode, wait)
  local token = held_token(owner)
  if token then  -- already its own: renew, same token
    redis.call('ZADD', holders_exp, exp, owner)
    return tonumber(token)
  end
  if redis.call('HEXISTS', waiters, owner) == 1 then  -- keeps its place, refreshes its expiry
    redis.call('ZADD', waiters_exp, exp, owner)
    return 0
  end
  local free
  if mode == 'S' then
    free = count('xh') == 0 and count('xw') == 0
  else
    free = redis.call('ZCARD', holders_exp) == 0 and redis.call('ZCARD', queue) == 0
  end
  if free then return grant(owner, mode) end
  if wait == '1' then enqueue(owner, mode) end
  return 0
end

local function state()
  local out = {0}
  local live = redis.call('ZRANGEBYSCORE', holders_exp, '(' .. now_arg, '+inf', 'WITHSCORES')
  for i = 1, #live, 2 do
    local v = redis.call('HGET', holders, live[i])
    out[#out + 1] = live[i]
    out[#out + 1] = string.sub(v, 1, 1)
    out[#out + 1] = string.sub(v, 3)
    out[#out + 1] = live[i + 1]
    out[1] = out[1] + 1
  end
  for _, owner in ipairs(redis.call('ZRANGE', queue, 0, -1)) do
    local expiry = redis.call('ZSCORE', waiters_exp, owner)
    if expiry and tonumber(expiry) > now then
      local v = redis.call('HGET', waiters, owner)
      out[#out + 1] = owner
      out[#out + 1] = string.sub(v, 1, 1)
      out[#out + 1] = string.sub(v, 3)
      out[#out + 1] = expiry
    end
  end
  return out
end

if op == 'state' then return state() end

local granted = {}
settle(granted)
local out = {}
if op == 'acquire' then
  for i = 4, #ARGV, 3 do
    out[#out + 1] = request(ARGV[i], ARGV[i + 1], ARGV[i + 2])
  end
  return out
elseif op == 'renew' then
  for i = 4, #ARGV, 2 do
    local owner = ARGV[i]
    local ok = held_token(owner) == ARGV[i + 1]
    if ok then redis.call('ZADD', holders_exp, exp, owner) end
    out[#out + 1] = ok and 1 or 0
  end
  return out
elseif op == 'release' then
  -- Every entry goes first, then the head is granted once: the same grants as a grant per
  -- entry, and no owner granted and then withdrawn in one call (as PostgreSQL's lock_batch).
  for i = 4, #ARGV, 2 do
    if held_token(ARGV[i]) == ARGV[i + 1] then del_holder(ARGV[i]) end
  end
  grant_head(granted)
  return granted
else  -- withdraw: a request granted since it queued is given back too
  for i = 4, #ARGV do
    if not del_waiter(ARGV[i]) then del_holder(ARGV[i]) end
  end
  grant_head(granted)
  return granted
end
