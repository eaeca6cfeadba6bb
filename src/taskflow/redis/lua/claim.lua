-- Claim up to ARGV[6] messages under a lease until ARGV[7] for worker ARGV[8].
-- ARGV[9]: result expiry for tasks this call ends (lease lapsed with no attempt left, or a
-- cancel was requested); ARGV[10]: the encoded "LeaseExpired" error.
-- Steps: promote due scheduled/retrying tasks, recover lapsed leases, pop by priority then
-- due time then enqueue order, mark each running with attempt + 1 and token + 1.
-- A task whose lease lapsed stays RUNNING under its old token (and in the 'lap' set) while it
-- waits in the ready set, so a late outcome or renewal of its old worker is still accepted
-- until another worker claims it.
-- ARGV[11] is a nonce of this claim call: if the client repeats the call because the reply was
-- lost (a connection dropped), the same deliveries are returned instead of a second batch that
-- nobody would run until its leases lapse.
-- ARGV[12] parks the worker for direct hand-offs ('' = do not): the lease length in seconds.
-- A claim that leaves demand unmet (the queue ran dry) records the unmet count as the
-- worker's free capacity in the queue's 'park' hash; one that is met removes the entry. The
-- enqueue script hands new tasks to parked workers (see hand_off in enqueue.lua).
-- A task whose stored form cannot be read (see fail_unreadable in common.lua) is failed on its
-- own as it is met; the others are claimed as usual.
-- Returns the ids of the tasks failed so, then per delivery 4 values:
-- {{id, ...}, id, token, attempt, message, id, token, ...}; when this call added deliveries to
-- the outbox (a lapsed last lease ended a flow task), the first element is {{id, ...}, n}.
local limit = tonumber(ARGV[6])
local LX, WID, RX, LEASE_ERR, NONCE = ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local PARK = ARGV[12]
local out = {UNREADABLE}
local last_key = K .. 'lk:' .. WID
local last = redis.call('GET', last_key)
if last then -- unreadable: as if there were none (the nonce cannot match)
  local ok, value = pcall(cmsgpack.unpack, last)
  last = ok and type(value) == 'table' and value or nil
end

-- One delivery in the reply: 4 values (`deliveries_from` in taskflow/redis/_codec.py).
local function deliver(id, tok, att, msg)
  out[#out + 1] = id
  out[#out + 1] = tok
  out[#out + 1] = att
  out[#out + 1] = msg
end

if last and last[1] == NONCE then -- {nonce, id, id, ...}
  for j = 2, #last do
    local id = last[j]
    local t = hmget_named(rkey(id), {'st', 'tok', 'att', 'msg', 'wid'})
    if t.st == 'running' and t.wid == WID then deliver(id, t.tok, t.att, t.msg) end
  end
  return out
end

local due = redis.call('ZRANGEBYSCORE', K .. 'sched', '-inf', NOW, 'WITHSCORES')
if #due > 0 then redis.call('ZREMRANGEBYSCORE', K .. 'sched', '-inf', NOW) end
for j = 1, #due, 2 do
  local id, at = due[j], due[j + 1]
  local t = load(id, {'st', 'pr', 'm'})
  if t.bad then
    fail_unreadable(id, t.bad, nil, RX)
  elseif t.st == 'scheduled' or t.st == 'retrying' then
    ready_add(t.pr, at, t.m)
  end
end

local lapsed = redis.call('ZRANGEBYSCORE', K .. 'run', '-inf', NOW, 'WITHSCORES')
if #lapsed > 0 then redis.call('ZREMRANGEBYSCORE', K .. 'run', '-inf', NOW) end
for j = 1, #lapsed, 2 do
  local id, at = lapsed[j], lapsed[j + 1]
  local t = hmget_named(rkey(id), {'st', 'att', 'rt', 'cr', 'pr', 'm', 'oid', 'n', 'fx', 'ob'})
  if t.st == 'running' then
    note_links(id, t.fx, t.ob)
    if t.cr == '1' then
      finish(id, 'cancelled', '', '', RX, t.att, t.oid, '', '', nil, t.n)
    elseif (tonumber(t.att) or 0) >= (tonumber(t.rt) or 0) + 1 then -- unreadable: none left
      finish(id, 'failed', '', LEASE_ERR, RX, t.att, t.oid, 'LeaseExpired', '', nil, t.n)
    else
      redis.call('SADD', K .. 'lap', id)
      ready_add(t.pr, at, t.m)
    end
  end
end

settle() -- lapsed last leases end flow tasks too: their children may become ready
flush() -- the pop below reads the ready sets the steps above added to

local need = limit
local prios = redis.call('ZRANGE', K .. 'prios', 0, -1)
for _, pr in ipairs(prios) do
  if need <= 0 then break end
  local rk = K .. 'r:' .. pr
  local empty = false -- known empty: a pop came back short
  while need > 0 and not empty do
    local asked = need
    local ms = redis.call('ZPOPMIN', rk, asked) -- member, score, member, score, ...
    empty = #ms < 2 * asked
    for k = 1, #ms, 2 do
      local m = ms[k]
      local id = string.sub(m, 13)
      local r = rkey(id)
      local x, _, why, raw = take_queued(id)
      local st, att, tok, msg, oid, cr, name
      if x then -- a first claim: the queued form has no attempt, token or cancel request yet
        st, msg, oid, name = x[QF.st], x[QF.msg], x[QF.oid], x[QF.n]
      elseif not why then
        local h = redis.pcall('HMGET', r, 'st', 'att', 'tok', 'msg', 'oid', 'cr', 'n', 'fx')
        if h.err then
          why = 'its record is a key of another type (' .. h.err .. ')'
        elseif not h[1] then -- listed ready, but neither form is stored
          why = 'its record is missing'
        else
          st, att, tok, msg, oid, cr, name = unpack(h, 1, 7)
          if h[8] then note_links(id, h[8], redis.call('HGET', r, 'ob')) end
        end
      end
      if why then fail_unreadable(id, why, raw, RX) end
      local ok = st == 'queued' or st == 'scheduled' or st == 'retrying'
      if st == 'running' then ok = redis.call('SREM', K .. 'lap', id) == 1 end
      if ok and cr == '1' then
        finish(id, 'cancelled', '', '', RX, att, oid, '', '', nil, name)
      elseif ok then
        att = (tonumber(att) or 0) + 1
        tok = (tonumber(tok) or 0) + 1
        if x then -- its hash record starts here, running; 'od': its first due time (wake.lua)
          hash_from(id, x, m, 'running', att, tok, 'sa', NOW, 'wid', WID, 'lx', LX, 'od',
            ms[k + 1])
        else
          redis.call('HSET', r, 'st', 'running', 'att', att, 'tok', tok, 'sa', NOW, 'wid', WID,
            'lx', LX)
          if tok > 1 then -- a new attempt starts with no progress or yields of the last one
            redis.call('HDEL', r, 'prog', 'y')
            redis.call('DEL', ykey(id))
          end
        end
        zadd_later(K .. 'run', LX, id)
        event(id, 'running', att, oid, '', name)
        deliver(id, tok, att, msg)
        need = need - 1
      end
    end
  end
  -- A level drained by exactly `need` stays listed until a later claim finds it empty.
  if empty then redis.call('ZREM', K .. 'prios', pr) end
end
settle() -- a cancel requested before the claim ended a flow task
flush()

if PARK ~= '' then
  if need > 0 then
    redis.call('HSET', K .. 'park', WID, need .. ' ' .. PARK)
  else
    redis.call('HDEL', K .. 'park', WID)
  end
end

-- Remember this call's deliveries for a repeated call (expiry only collects the garbage of
-- workers that went away; correctness never depends on it).
if #out > 1 then
  local mine = {NONCE}
  for j = 2, #out, 4 do mine[#mine + 1] = out[j] end
  redis.call('SET', last_key, cmsgpack.pack(mine), 'PX', 86400000)
end
if FLOW_WOKE then wake_workers() end
if OUTBOX_N > 0 then out[1] = {UNREADABLE, OUTBOX_N} end
return out
