-- Shared prelude of every taskflow script (prepended by taskflow._redis.scripts).
--
-- ARGV[1] key prefix, ARGV[2] queue, ARGV[3] now (seconds, as the caller's exact float text),
-- ARGV[4] approximate event stream length, ARGV[5] publish command (PUBLISH or SPUBLISH).
-- Every key a script touches is built from "<prefix>{<queue>}:", so all of them share the
-- queue's hash slot; KEYS[1] names one of them so that a cluster client routes the call.
-- Times are stored as the caller's text and compared with tonumber(); the server clock is
-- never read.
--
-- Writes to the queue's sorted sets are collected and sent as one command per set at the end
-- of the script (`flush`): each redis.call costs more than the work it does, so a batch of 100
-- tasks makes a few set writes, not hundreds. Result pushes are collected the same way.
-- Scripts that change either must call flush() before they return.
local P = ARGV[1]
local Q = ARGV[2]
local NOW = ARGV[3]
local NOWN = tonumber(NOW)
local MAXLEN = ARGV[4]
local PUB = ARGV[5]
local K = P .. '{' .. Q .. '}:'
local TERMINAL = {done = true, failed = true, cancelled = true, expired = true}

-- A batch arrives as one argument (one instead of hundreds, much cheaper for the client to
-- send): a msgpack array of strings, decoded by the server's C msgpack library. (Its msgpack
-- has no "bin" type: the client sends binary strings with "str" headers; see _frame.)
local function unframe(s)
  return cmsgpack.unpack(s)
end

local function rkey(id) return K .. 't:' .. id end
local function ykey(id) return K .. 'y:' .. id end

-- Deferred sorted-set writes: key -> {score, member, score, member, ...} or {member, ...}.
local ZADDS = {}
local ZREMS = {}
local PUSHES = {} -- inbox -> packed outcomes (see push_later)
-- The list of `tables` under `key`, made on first use.
local function list_of(tables, key)
  local t = tables[key]
  if not t then
    t = {}
    tables[key] = t
  end
  return t
end
local function zadd_later(key, score, member)
  local t = list_of(ZADDS, key)
  t[#t + 1] = score
  t[#t + 1] = member
end
local function zrem_later(key, member)
  local t = list_of(ZREMS, key)
  t[#t + 1] = member
end
local function flush()
  for key, t in pairs(ZREMS) do
    for i = 1, #t, 1000 do
      redis.call('ZREM', key, unpack(t, i, math.min(i + 999, #t)))
    end
  end
  for key, t in pairs(ZADDS) do
    for i = 1, #t, 1000 do
      redis.call('ZADD', key, unpack(t, i, math.min(i + 999, #t)))
    end
  end
  ZADDS, ZREMS = {}, {}
  for inbox, t in pairs(PUSHES) do
    redis.call(PUB, inbox, table.concat(t))
  end
  PUSHES = {}
end

-- Append one event to the queue's capped stream (same script = same atomic step). One XADD
-- per event costs the server less than framing a call's events into one entry would.
local function event(id, kind, attempt, oid, detail)
  local a = tostring(attempt or 0)
  if oid and oid ~= '' then
    if detail and detail ~= '' then
      redis.call('XADD', K .. 'ev', 'MAXLEN', '~', MAXLEN, '*', 'i', id, 'k', kind, 't', NOW,
        'a', a, 'o', oid, 'd', detail)
    else
      redis.call('XADD', K .. 'ev', 'MAXLEN', '~', MAXLEN, '*', 'i', id, 'k', kind, 't', NOW,
        'a', a, 'o', oid)
    end
  elseif detail and detail ~= '' then
    redis.call('XADD', K .. 'ev', 'MAXLEN', '~', MAXLEN, '*', 'i', id, 'k', kind, 't', NOW,
      'a', a, 'd', detail)
  else
    redis.call('XADD', K .. 'ev', 'MAXLEN', '~', MAXLEN, '*', 'i', id, 'k', kind, 't', NOW,
      'a', a)
  end
end

-- Make a message claimable: one sorted set per priority level (score: due time; member:
-- zero-padded enqueue sequence + id, so ties keep enqueue order), and the set of levels.
local LEVELS = {}
local function ready_add(pr, score, m)
  zadd_later(K .. 'r:' .. pr, score, m)
  if not LEVELS[pr] then
    LEVELS[pr] = true
    zadd_later(K .. 'prios', -tonumber(pr), pr)
  end
end

-- Immediate (not deferred): the level's emptiness decides whether the level stays listed.
local function ready_remove(pr, m)
  local rk = K .. 'r:' .. pr
  redis.call('ZREM', rk, m)
  if redis.call('EXISTS', rk) == 0 then redis.call('ZREM', K .. 'prios', pr) end
end

-- Wake idle workers of this queue (one generation bump and one message per script call).
local function wake_workers()
  redis.call('INCR', K .. 'gen')
  redis.call(PUB, K .. 'work', '1')
end

-- Lapsed tasks waiting for re-delivery ('lap' set); most calls find it empty and skip SREMs.
local LAPSED = nil
local function take_lapsed(id)
  if LAPSED == nil then LAPSED = redis.call('SCARD', K .. 'lap') > 0 end
  return LAPSED and redis.call('SREM', K .. 'lap', id) == 1
end

-- Result waiters register on the task record itself: the `get` script, run with a waiter's
-- "inbox" (a channel of one process and queue, `{Q}:inbox:<token>`), appends the inbox to the
-- record's `w` field in the same atomic step that reads the state, so a completion after the
-- read cannot be missed. A terminal write pushes the outcome to each registered inbox; all of a
-- script call's pushes to one inbox go out as one message (`flush`), and tasks nobody waits for
-- push nothing. A push carries what the terminal write changed, not the whole record: per task
-- "<len>:<id>", "<n>;" and n hash fields and values, then "<n>;" and the yields, each string
-- "<len>:<bytes>" (RedisStorage._on_message merges it into the waiter's last read).
local function push_later(w, id, fields, has_yields)
  local ys = {}
  if has_yields then ys = redis.call('LRANGE', ykey(id), 0, -1) end
  local parts = {#id, ':', id, #fields, ';'}
  for _, s in ipairs(fields) do
    parts[#parts + 1] = #s .. ':'
    parts[#parts + 1] = s
  end
  parts[#parts + 1] = #ys .. ';'
  for _, s in ipairs(ys) do
    parts[#parts + 1] = #s .. ':'
    parts[#parts + 1] = s
  end
  local packed = table.concat(parts)
  for inbox in string.gmatch(w, '[^,]+') do
    local t = list_of(PUSHES, inbox)
    t[#t + 1] = packed
  end
end

-- Write a terminal state once: status, outcome, indexes, event, and the waiters' notification.
-- `nr` is the task's no-result flag ('1': the task does not store results); `x` the record's
-- fields named in XF if the caller read them already (nil: read here).
local XF = {'w', 'sa', 'wid', 'tok', 'prog', 'cr', 'y'}
local function finish(id, status, res, err, rx, attempt, oid, detail, nr, x)
  local fields = {'st', status, 'fa', NOW}
  if res ~= '' and nr ~= '1' then
    fields[#fields + 1] = 'res'
    fields[#fields + 1] = res
  end
  if err ~= '' then
    fields[#fields + 1] = 'err'
    fields[#fields + 1] = err
  end
  if rx ~= '' then
    fields[#fields + 1] = 'rx'
    fields[#fields + 1] = rx
    zadd_later(K .. 'fin', rx, id)
  end
  redis.call('HSET', rkey(id), unpack(fields))
  zrem_later(K .. 'run', id)
  if status == 'failed' then zadd_later(K .. 'dead', NOW, id) end
  event(id, status, attempt, oid, detail)
  if x == nil then x = redis.call('HMGET', rkey(id), unpack(XF)) end
  if x[1] then
    for j = 2, 6 do
      if x[j] then
        fields[#fields + 1] = XF[j]
        fields[#fields + 1] = x[j]
      end
    end
    fields[#fields + 1] = 'att'
    fields[#fields + 1] = tostring(attempt or 0)
    push_later(x[1], id, fields, x[7])
  end
end

-- Store a new task record and make it claimable (or scheduled). `seq` orders equal due times.
-- `unlisted`: store it queued but leave it out of the ready set (enqueue hands it off).
-- `inbox`: a result waiter's inbox to register at once (see push_later), or '' for none.
local function create(id, msg, pr, due, sched, dk, dt, rt, oid, nr, seq, unlisted, inbox)
  local m = string.format('%012x', seq) .. id
  local st = 'queued'
  if sched == '1' then st = 'scheduled' end
  if inbox and inbox ~= '' then
    redis.call('HSET', rkey(id), 'msg', msg, 'st', st, 'att', 0, 'tok', 0, 'pr', pr, 'm', m,
      'rt', rt, 'dk', dk, 'dt', dt, 'oid', oid, 'nr', nr, 'w', inbox)
  else
    redis.call('HSET', rkey(id), 'msg', msg, 'st', st, 'att', 0, 'tok', 0, 'pr', pr, 'm', m,
      'rt', rt, 'dk', dk, 'dt', dt, 'oid', oid, 'nr', nr)
  end
  if sched == '1' then
    zadd_later(K .. 'sched', due, id)
    event(id, 'scheduled', 0, oid, '')
  else
    if not unlisted then ready_add(pr, due, m) end
    event(id, 'queued', 0, oid, '')
  end
  if dk ~= '' then redis.call('HSET', K .. 'dedup', dk, id) end
end
