-- Shared prelude of every taskflow script (prepended by taskflow/redis/_scripts.py).
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

-- One framing for everything packed: msgpack. A batch arrives as one argument (one instead
-- of hundreds, much cheaper for the client to send): a msgpack array of strings, decoded by the
-- server's C msgpack library (its msgpack has no "bin" type: the client packs binary strings
-- with "str" headers, see `pack` in _codec.py); pushes and hand-offs go out packed the same way.
local function unframe(s)
  return cmsgpack.unpack(s)
end

-- HMGET of `names` (a list) on `key`, as a table by field name; unset fields are nil.
local function hmget_named(key, names)
  local values = redis.call('HMGET', key, unpack(names))
  local t = {}
  for i = 1, #names do
    if values[i] then t[names[i]] = values[i] end
  end
  return t
end

local function rkey(id) return K .. 't:' .. id end
local function ykey(id) return K .. 'y:' .. id end
local function qkey(id) return K .. 'q:' .. id end
local function ckey(id) return K .. 'c:' .. id end -- checkpoints (checkpoint.lua)

-- Deferred sorted-set writes: key -> {score, member, score, member, ...} or {member, ...}.
local ZADDS = {}
local ZREMS = {}
local PUSHES = {} -- inbox -> list of outcomes to push (see push_later)
local PUSHED_BYTES = {} -- inbox -> bytes of results and errors in its message so far
-- Most bytes of task data one pub/sub message carries (results and errors of a push, messages
-- of a hand-off). A subscriber whose unread messages pass the server's
-- `client-output-buffer-limit pubsub` (32 MB hard by default) is disconnected, losing them all,
-- so nothing unbounded goes over pub/sub: a larger outcome is pushed as "ended, read it", and a
-- larger task is not handed off but stored and claimed as usual.
local PUSH_MAX_BYTES = 262144
-- Queued forms this call made (see create): id -> packed, and the key, value list for MSET.
local NEWQ = {}
local NEWQ_SETS = {}
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
local EV = K .. 'ev' -- the event stream (see event)
local EVENTS = 0 -- events added since the stream was last trimmed
-- Tasks this call ended (see finish), added by flush to a ring of 60 one-second buckets
-- (field: the second of NOW mod 60; value: "<second>:<count>") that `inspect` sums for
-- `QueueStats.finished_last_minute`: one read and one write per call, bounded in size.
local FINISHED = 0
local function count_finished()
  local second = math.floor(NOWN)
  local bucket = tostring(second % 60)
  local n = FINISHED
  FINISHED = 0
  local old = redis.call('HGET', K .. 'f1m', bucket)
  if old then
    local s, c = string.match(old, '^(%d+):(%d+)$')
    if tonumber(s) == second then n = n + tonumber(c) end
  end
  redis.call('HSET', K .. 'f1m', bucket, second .. ':' .. n)
end
local function flush()
  if EVENTS > 1 then redis.call('XTRIM', EV, 'MAXLEN', '~', MAXLEN) end
  EVENTS = 0
  if FINISHED > 0 then count_finished() end
  for i = 1, #NEWQ_SETS, 1000 do
    redis.call('MSET', unpack(NEWQ_SETS, i, math.min(i + 999, #NEWQ_SETS)))
  end
  NEWQ, NEWQ_SETS = {}, {}
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
    redis.call(PUB, inbox, cmsgpack.pack(t))
  end
  PUSHES, PUSHED_BYTES = {}, {}
end

-- The flow wiring of the tasks this call read (see "Flows" below): id -> {fl = flow id,
-- x = the wiring (`fx`, unpacked: FX), ob = '1' if tasks send their outcome to it}, noted from
-- the task's `fx` and `ob` hash fields. Every task with links has an `fx` (a plain task
-- gets an empty wiring when a copy links to it, see link_outcome), so the hot paths (complete,
-- claim) read `ob` only for those: a plain task costs one absent field in a read, and one
-- table lookup per event and per end.
local LINKS = {}
local function note_links(id, fx, ob)
  if not fx and not ob then return end
  local links = {ob = ob or nil}
  if fx then
    links.x = cmsgpack.unpack(fx)
    if links.x[1] ~= '' then links.fl = links.x[1] end
  end
  LINKS[id] = links
end

-- Append one event to the queue's capped stream (same script = same atomic step). One XADD
-- per event costs the server less than framing a call's events into one entry would. Only a
-- call's first event trims the stream (MAXLEN ~); a call that adds more trims once more at the
-- end (flush), so a batch does not pay for a trim check per event. `name` is the task's name
-- ("n"; a record stored before records kept it has none). Fields left out: "n" when unknown,
-- "a" (attempt) when 0, "o" (order id) and "d" (detail) when empty.
local function event(id, kind, attempt, oid, detail, name)
  local a = tostring(attempt or 0)
  local links = LINKS[id]
  local fl = links and links.fl
  local extra = (oid and oid ~= '') or (detail and detail ~= '') or not name or name == ''
    or fl
  if EVENTS > 0 and not extra then -- the common case, without building a table
    EVENTS = EVENTS + 1
    if a == '0' then
      redis.call('XADD', EV, '*', 'i', id, 'k', kind, 't', NOW, 'n', name)
    else
      redis.call('XADD', EV, '*', 'i', id, 'k', kind, 't', NOW, 'n', name, 'a', a)
    end
    return
  end
  local args = {'XADD', EV, '*', 'i', id, 'k', kind, 't', NOW}
  if EVENTS == 0 then
    args = {'XADD', EV, 'MAXLEN', '~', MAXLEN, '*', 'i', id, 'k', kind, 't', NOW}
  end
  EVENTS = EVENTS + 1
  if name and name ~= '' then
    args[#args + 1] = 'n'
    args[#args + 1] = name
  end
  if a ~= '0' then
    args[#args + 1] = 'a'
    args[#args + 1] = a
  end
  if oid and oid ~= '' then
    args[#args + 1] = 'o'
    args[#args + 1] = oid
  end
  if detail and detail ~= '' then
    args[#args + 1] = 'd'
    args[#args + 1] = detail
  end
  if fl then
    args[#args + 1] = 'f'
    args[#args + 1] = fl
  end
  redis.call(unpack(args))
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

-- Wake idle workers of this queue (one message per script call).
local function wake_workers()
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
-- push nothing. A message is a msgpack array with, per task, the array
-- {id, status, result, error, result expiry} ('' where there is none): the `OUTCOME_FIELDS`
-- of taskflow/redis/_codec.py, decoded by `outcomes_pushed` there; or only {id, status} once
-- the message holds PUSH_MAX_BYTES of results and errors (the waiters read that outcome).
local function push_later(w, id, status, res, err, rx)
  local outcome = {id, status, res, err, rx}
  local size = #res + #err
  for inbox in string.gmatch(w, '[^,]+') do
    local t = list_of(PUSHES, inbox)
    local bytes = (PUSHED_BYTES[inbox] or 0) + size
    if bytes > PUSH_MAX_BYTES then
      t[#t + 1] = {id, status} -- too large for this message: "ended, read it"
    else
      PUSHED_BYTES[inbox] = bytes
      t[#t + 1] = outcome
    end
  end
end

-- Flow tasks this call ended, whose end `settle` (below) still has to apply to the tasks
-- linked to them.
local ENDED = {}

-- Write a terminal state once: status, outcome, indexes, event, and the waiters' notification.
-- `nr` is the task's no-result flag ('1': the task does not store results); `w` its waiters'
-- inboxes if the caller read them already (nil: read here); `name` the task's name.
local function finish(id, status, res, err, rx, attempt, oid, detail, nr, w, name)
  local fields = {'st', status, 'fa', NOW}
  if nr == '1' then res = '' end
  if res ~= '' then
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
  FINISHED = FINISHED + 1
  if status == 'failed' then zadd_later(K .. 'dead', NOW, id) end
  event(id, status, attempt, oid, detail, name)
  if w == nil then w = redis.call('HGET', rkey(id), 'w') end
  if w then push_later(w, id, status, res, err, rx) end
  local links = LINKS[id]
  if links then
    ENDED[#ENDED + 1] = {id = id, st = status, res = res, err = err, rx = rx, name = name}
  end
end

-- One stored form per stage of a task's life. From enqueue until it is first claimed (or ends
-- unclaimed) a task is one string at `qkey(id)`, its queued form: the 12 hex digits of its
-- enqueue sequence (as in its ready-set member `m`), then a msgpack array of the fields named
-- in QF, packed by the client. From its first claim (or its end) on, it is a hash at
-- `rkey(id)`, never a string again: a released or retried task, queued once more, stays a
-- hash (it has attempts, a token, maybe progress). Writing one string (all of a call's in one
-- MSET) costs the server a fraction of a new hash with a dozen fields, and most tasks are read
-- again only by the claim that starts them. `load` reads a task in either form by field name;
-- the queued form has no attempt, token, start or outcome fields, so those are nil there. `n`,
-- the task's name (for its events), is missing from forms stored before it was added.
local QF = {msg = 1, st = 2, pr = 3, rt = 4, dk = 5, dt = 6, oid = 7, nr = 8, w = 9, n = 10}
local QF_NAMES = {'msg', 'st', 'pr', 'rt', 'dk', 'dt', 'oid', 'nr', 'w', 'n'} -- QF in order

-- Stored data can be unreadable: a queued form overwritten, truncated, of another key type,
-- short of fields, or gone while its task is still listed. A script must not stop half-way on
-- it (Redis keeps what a failed script wrote before the error), so every read of a stored
-- queued form is checked before anything is changed on its account, and a task that cannot be
-- read is failed on its own (`fail_unreadable`) while the rest of the call goes on.

-- Why the fields `x` of an unpacked queued form are not what the client packs (nil if they are).
local function queued_problem(x)
  if type(x) ~= 'table' then return 'its queued form is not an array of fields' end
  for _, name in ipairs(QF_NAMES) do
    local v = x[QF[name]]
    if type(v) ~= 'string' and not (name == 'n' and v == nil) then
      return 'field ' .. name .. ' of its queued form is missing or not a string'
    end
  end
  if x[QF.st] ~= 'queued' and x[QF.st] ~= 'scheduled' then
    return 'its queued form has no waiting state'
  end
  if not tonumber(x[QF.pr]) or not tonumber(x[QF.rt])
      or (x[QF.dt] ~= '' and not tonumber(x[QF.dt])) then
    return 'its queued form has a priority, retries or dedup TTL that is not a number'
  end
  return nil
end

-- A stored queued form `q` as its fields (indexed by QF) and its sequence digits; or nil, nil
-- and why it cannot be read.
local function unpack_queued(q)
  if #q < 13 or not string.match(string.sub(q, 1, 12), '^%x+$') then
    return nil, nil, 'its queued form is too short or does not start with its sequence'
  end
  local ok, x = pcall(cmsgpack.unpack, string.sub(q, 13))
  if not ok then return nil, nil, 'its queued form is not msgpack (' .. tostring(x) .. ')' end
  local why = queued_problem(x)
  if why then return nil, nil, why end
  return x, string.sub(q, 1, 12)
end

-- The stored queued form of `id`, read with `cmd` (GET, or GETDEL to take it): its fields and
-- sequence digits; nil if it has none; or nil, nil, why it cannot be read, and the stored
-- string if it was one. Never raises: a key of another type is an unreadable form (taken
-- with DEL by GETDEL).
local function read_queued(id, cmd)
  local q = redis.pcall(cmd, qkey(id))
  if type(q) == 'table' then -- an error reply: the key holds another type
    if cmd == 'GETDEL' then redis.call('DEL', qkey(id)) end
    return nil, nil, 'its queued form is a key of another type (' .. tostring(q.err) .. ')'
  end
  if not q then return nil end
  local x, seq, why = unpack_queued(q)
  return x, seq, why, why and q
end

-- The queued form of `id` (fields, sequence digits), nil if it has none, or nil, nil, why not.
local function queued_form(id)
  if NEWQ[id] then return unpack_queued(NEWQ[id]) end
  return read_queued(id, 'GET')
end

-- As `queued_form` for a form stored by an earlier call, deleting it (its task is about to get
-- its hash record); a fourth value is the unreadable string, if one was taken.
local function take_queued(id)
  return read_queued(id, 'GETDEL')
end

-- Task ids this call failed as unreadable (see fail_unreadable), for the caller's log.
local UNREADABLE = {}

-- Fail task `id`, whose stored form cannot be read (`why`), on its own, as a worker fails a
-- message it cannot decode: a hash record 'failed' with an UndecodableMessage error (result
-- expiry `rx`), in the dead letters, with its event. Called only for a task without a readable
-- hash record; its queued form is deleted, the unreadable string (`raw` if it was taken
-- already) kept in `msg` for whoever looks into it. Its entries in the ready sets (found by
-- the sequence digits that start that string) and in `sched` go. Result waiters registered on
-- it (in `w` of its hash, where `get` registers them on a task it cannot read) are pushed the
-- failure.
local function fail_unreadable(id, why, raw, rx)
  local w = redis.pcall('HGET', rkey(id), 'w') -- waiters a read registered (see get.lua)
  if type(w) ~= 'string' then w = false end
  if raw == nil then raw = redis.pcall('GET', qkey(id)) end
  if type(raw) ~= 'string' then raw = '' end
  redis.call('DEL', rkey(id), qkey(id))
  if string.match(string.sub(raw, 1, 12), '^%x%x%x%x%x%x%x%x%x%x%x%x$') then
    local m = string.sub(raw, 1, 12) .. id
    for _, pr in ipairs(redis.call('ZRANGE', K .. 'prios', 0, -1)) do
      redis.call('ZREM', K .. 'r:' .. pr, m)
    end
  end
  redis.call('ZREM', K .. 'sched', id)
  redis.call('HSET', rkey(id), 'msg', raw, 'st', 'failed', 'att', 0, 'tok', 0)
  local err = cmsgpack.pack({'UndecodableMessage', 'task ' .. id .. ' cannot be read from '
    .. 'Redis: ' .. why .. '; it was failed without running'})
  if w then redis.call('HSET', rkey(id), 'w', w) end
  finish(id, 'failed', '', err, rx, 0, '', 'UndecodableMessage', '', w, nil)
  UNREADABLE[#UNREADABLE + 1] = id
end

-- The fields `names` (a list that includes 'st') of task `id` as a table by name, from its hash
-- record, or from its queued form: there every QF field, and `m`, its ready-set member (an
-- empty `w` is nil, as in a hash). Empty for an unknown task; for a task whose queued form
-- cannot be read, only `bad` (why not) and `w` (waiters registered in its hash). Also returns
-- the queued form's fields and sequence digits (nil for a hash record or an unknown task).
local function load(id, names)
  local t = hmget_named(rkey(id), names)
  if t.st then return t, nil, nil end
  local x, seq, why = queued_form(id)
  if why then return {bad = why, w = t.w}, nil, nil end
  if not x then return t, nil, nil end
  for name, k in pairs(QF) do t[name] = x[k] end
  if t.w == '' then t.w = nil end
  t.m = seq .. id
  return t, x, seq
end

-- Write the hash record of a task from its queued form's fields `x` and ready-set member `m`,
-- with state `st`, attempt `att`, token `tok`, and further field, value pairs.
local function hash_from(id, x, m, st, att, tok, ...)
  local args = {'HSET', rkey(id), 'msg', x[QF.msg], 'st', st, 'att', att, 'tok', tok,
    'pr', x[QF.pr], 'm', m, 'rt', x[QF.rt], 'dk', x[QF.dk], 'dt', x[QF.dt], 'oid', x[QF.oid],
    'nr', x[QF.nr], ...}
  if x[QF.w] ~= '' then
    args[#args + 1] = 'w'
    args[#args + 1] = x[QF.w]
  end
  if x[QF.n] then
    args[#args + 1] = 'n'
    args[#args + 1] = x[QF.n]
  end
  redis.call(unpack(args))
end

-- Whether a task `id` exists, in either form.
local function exists(id)
  return NEWQ[id] ~= nil or redis.call('EXISTS', rkey(id), qkey(id)) > 0
end

-- For a task about to end unclaimed (cancel, purge), in this same call: turn its queued form
-- (stored by an earlier call) into its hash record, where `finish` writes the end. False if it
-- has none (its record is a hash already, or it does not exist); nil if it could not be read
-- and was failed instead (see fail_unreadable; `rx` its result expiry).
local function hash_before_end(id, rx)
  local x, seq, why, raw = take_queued(id)
  if why then
    fail_unreadable(id, why, raw, rx)
    return nil
  end
  if not x then return false end
  hash_from(id, x, seq .. id, x[QF.st], 0, 0)
  return true
end

-- Store the queued form `q` (sequence digits first) of task `id`, written by `flush`.
local function store_queued(id, q)
  NEWQ_SETS[#NEWQ_SETS + 1] = qkey(id)
  NEWQ_SETS[#NEWQ_SETS + 1] = q
end

-- Store a new task and make it claimable (or scheduled). `q` is its queued form's fields as
-- the client packed them (QF; its state 'scheduled' if `sched` is '1', else 'queued'); `seq`
-- orders equal due times; `name` is the task's name (also in `q`, which is not unpacked here).
-- A task enqueue hands off (`handed`) is neither stored nor listed ready here: enqueue gives it
-- its hash record (running) once the hand-off is delivered, or stores and lists it if not.
-- Returns its ready-set member.
local function create(id, q, pr, due, sched, dk, oid, seq, handed, name)
  local digits = string.format('%012x', seq)
  local m = digits .. id
  NEWQ[id] = digits .. q
  if not handed then store_queued(id, NEWQ[id]) end
  if sched == '1' then
    zadd_later(K .. 'sched', due, id)
    event(id, 'scheduled', 0, oid, '', name)
  else
    if not handed then ready_add(pr, due, m) end
    event(id, 'queued', 0, oid, '', name)
  end
  if dk ~= '' then redis.call('HSET', K .. 'dedup', dk, id) end
  return m
end

-- Flows (see docs/internals/redis.md, "Flows"). A message with flow fields is stored as a hash
-- from its enqueue on (never the queued form, never handed off), with `fl` its flow id and
-- `fx` its wiring, packed by the client (`flow_wiring` in _codec.py): the array FX below.
-- `ob` = '1' once a task sends its outcome to it (`{Q}:ob:<id>` lists those), `jn` the join
-- among them. A WAITING task is in `{Q}:wait` (by enqueue sequence); the parents that arrived
-- at a child are the set `{Q}:ar:<id>`, so a parent told twice counts once. The end of a task
-- reaches its linked tasks in `settle`, in the same call: children of the same queue,
-- its `outcome_to` task (always of the same queue) and the tasks sending their outcome to it;
-- a child of another queue is told through the queue's outbox `{Q}:outbox` (a sorted set by
-- sequence, member: a packed delivery), which the client delivers after the call with the
-- `arrive` script (and every worker's housekeeping again, should it die in between).
local FLOW_WOKE = false -- a task became claimable (or scheduled): wake idle workers
local OUTBOX_N = 0 -- deliveries this call added to the outbox
local REPORTED = {} -- id -> true: its run reported its end DONE or FAILED (complete.lua)

-- `out`, a script's reply, with a last element {n} if this call added n deliveries to the
-- outbox (`split_outbox` in _codec.py), for the client to deliver them.
local function with_outbox(out)
  if OUTBOX_N > 0 then out[#out + 1] = {OUTBOX_N} end
  return out
end

-- The flow code proper, built on first use (`flows()`): a script call that meets no flow task
-- (the plain path) does not pay for making its functions.
local FLOWS = nil
local function flows()
  if FLOWS then return FLOWS end
  local FX = {fl = 1, node = 2, ch = 3, af = 4, ot = 5, cp = 6, np = 7, eta = 8, at = 9}
  -- What the flow code reads of a task it may end.
  local LINK_FIELDS = {'st', 'att', 'pr', 'm', 'oid', 'n', 'nr', 'w', 'fx', 'ob'}

  -- The fields LINK_FIELDS of task `id` as a hash record (a queued form is turned into its hash
  -- first, see hash_before_end), its links noted; empty for an unknown task.
  local function load_linked(id, rx)
    hash_before_end(id, rx)
    local t = hmget_named(rkey(id), LINK_FIELDS)
    if t.st then note_links(id, t.fx, t.ob) end
    return t
  end

  -- Take a task that has not ended (fields `t`) out of every set that lists it as waiting,
  -- claimable or lapsed (`finish` takes it out of `run`).
  local function unlist(id, t)
    if t.st == 'waiting' then
      redis.call('ZREM', K .. 'wait', id)
    elseif t.st == 'running' then
      if take_lapsed(id) then ready_remove(t.pr, t.m) end
    else
      if t.m then ready_remove(t.pr, t.m) end
      redis.call('ZREM', K .. 'sched', id)
    end
  end

  -- How a child names a parent that ended without a value: "<node or name> (<id>) <status>",
  -- then ": <type>: <message>" of its error if it has one (UPSTREAM_FAILED in _message.py).
  local function upstream_text(e, node)
    local label = node
    if not label or label == '' then label = e.name or '' end
    local text = label .. ' (' .. e.id .. ') ' .. e.st
    if e.err ~= '' then
      local ok, info = pcall(cmsgpack.unpack, e.err)
      if ok and type(info) == 'table' then
        text = text .. ': ' .. tostring(info[1]) .. ': ' .. tostring(info[2])
      end
    end
    return text
  end

  -- Make a WAITING child whose parents all arrived claimable: QUEUED, or SCHEDULED until its
  -- eta; its event says "ready".
  local function make_ready(id, t, eta)
    redis.call('ZREM', K .. 'wait', id)
    if eta ~= '' and tonumber(eta) > NOWN then
      redis.call('HSET', rkey(id), 'st', 'scheduled')
      zadd_later(K .. 'sched', eta, id)
      event(id, 'scheduled', 0, t.oid, 'ready', t.n)
    else
      redis.call('HSET', rkey(id), 'st', 'queued')
      ready_add(t.pr, NOW, t.m)
      event(id, 'queued', 0, t.oid, 'ready', t.n)
    end
    FLOW_WOKE = true
  end

  -- Tell child `id` (of this queue) that `parent` ended, with a value (`ok`) or not (`text` says
  -- how). Idempotent: a parent that arrived already, or a child no longer waiting for its
  -- parents (ready, running, ended, or waiting for its join), is left alone. Without a value and
  -- unless its policy is RUN, the child ends at once (FAILED UpstreamFailed or, policy SKIP,
  -- CANCELLED Skipped), which `settle` applies to its own links in turn.
  local function arrive(id, parent, ok, text, rx)
    local t = hmget_named(rkey(id), LINK_FIELDS)
    if t.st ~= 'waiting' or not t.fx then return end
    if redis.call('SADD', K .. 'ar:' .. id, parent) == 0 then return end
    note_links(id, t.fx, t.ob)
    local x = LINKS[id].x
    if not ok and x[FX.af] ~= 'run' then
      redis.call('ZREM', K .. 'wait', id)
      local kind, etype = 'failed', 'UpstreamFailed'
      if x[FX.af] == 'skip' then kind, etype = 'cancelled', 'Skipped' end
      finish(id, kind, '', cmsgpack.pack({etype, text}), rx, t.att or 0, t.oid, etype, t.nr,
        t.w or false, t.n)
    elseif redis.call('SCARD', K .. 'ar:' .. id) >= tonumber(x[FX.np]) then
      make_ready(id, t, x[FX.eta])
    end
  end

  -- Record the delivery of a parent's end to child `id` of queue `queue` (another queue, so
  -- maybe another slot): the client delivers it after this call (`arrive` script).
  local function to_outbox(id, queue, parent, ok, text)
    local n = redis.call('INCR', K .. 'oseq')
    redis.call('ZADD', K .. 'outbox', n,
      cmsgpack.pack({tostring(n), id, queue, parent, ok and '1' or '', text or ''}))
    OUTBOX_N = OUTBOX_N + 1
  end

  -- The task `id` that ended as `e` sends its outcome to task `target` (same queue): it ends
  -- the same way unless it ended already; its lease, if it runs, is void from here on.
  local function adopt(target, e, copy)
    local t = load_linked(target, e.rx)
    if not t.st or TERMINAL[t.st] then return end
    unlist(target, t)
    local detail = (copy and 'won by copy ' or 'outcome of ') .. e.id
    finish(target, e.st, e.res, e.err, e.rx, t.att or 0, t.oid, detail, t.nr, t.w or false, t.n)
  end

  -- The Superseded error of a task whose `outcome_to` task `id` (fields `t`: its node in `fx`,
  -- its name `n` and status `st`) ended first: "<node or name> (<id>) ended first: <status>".
  local function superseded_error(id, t)
    local label = t.n or ''
    if t.fx then
      local node = cmsgpack.unpack(t.fx)[FX.node]
      if node ~= '' then label = node end
    end
    return cmsgpack.pack({'Superseded', label .. ' (' .. id .. ') ended first: ' .. t.st})
  end

  -- Cancel (SUPERSEDED) every task that sends its outcome to `id`, which ended, and has not
  -- ended itself: at once if it does not run, by request if it does.
  local function supersede(id, rx)
    local err = nil
    local ended = nil -- the fields of `id`, read once
    for _, other in ipairs(redis.call('SMEMBERS', K .. 'ob:' .. id)) do
      local t = load_linked(other, rx)
      if t.st == 'running' then
        if redis.call('HSETNX', rkey(other), 'cr', '1') == 1 then
          event(other, 'cancel_requested', t.att, t.oid, 'lost to ' .. id, t.n)
        end
      elseif t.st and not TERMINAL[t.st] then
        unlist(other, t)
        ended = ended or hmget_named(rkey(id), {'st', 'n', 'fx'})
        err = err or superseded_error(id, ended)
        finish(other, 'cancelled', '', err, rx, t.att or 0, t.oid, 'lost to ' .. id, t.nr,
          t.w or false, t.n)
      end
    end
  end

  -- Apply the end of each flow task this call ended to its linked tasks, and of each task those
  -- end in turn (a cascade), in this same call.
  local function settle()
    local i = 1
    while i <= #ENDED do
      local e = ENDED[i]
      i = i + 1
      local links = LINKS[e.id]
      local x = links.x
      if x then
        local ch = x[FX.ch]
        local ok = e.st == 'done'
        local text = nil
        if not ok and #ch > 0 then text = upstream_text(e, x[FX.node]) end
        for j = 1, #ch, 2 do
          if ch[j + 1] == Q then
            arrive(ch[j], e.id, ok, text, e.rx)
          else
            to_outbox(ch[j], ch[j + 1], e.id, ok, text)
          end
        end
        -- A copy passes on only what its own run reported (DONE or FAILED, see REPORTED); a
        -- join passes on any end.
        local copy = x[FX.cp] == '1'
        if x[FX.ot] ~= '' and (not copy or REPORTED[e.id]) then adopt(x[FX.ot], e, copy) end
      end
      if links.ob then supersede(e.id, e.rx) end
    end
    ENDED = {}
  end

  -- Link task `id` (fields: its queued form `x`) to the task `target` it sends its outcome to:
  -- listed in `{Q}:ob:<target>` (and as its join unless it is a `copy`; a copy emits HEDGED on
  -- the target). A target that ended already has its outcome: the new task, not listed yet, is
  -- cancelled at once (false returned).
  local function link_outcome(id, x, target, copy, name, rx)
    local t = load_linked(target, rx)
    if not t.st then return true end
    if TERMINAL[t.st] then
      local w = x[QF.w] ~= '' and x[QF.w] or false
      finish(id, 'cancelled', '', superseded_error(target, t), rx, 0, x[QF.oid],
        'lost to ' .. target, x[QF.nr], w, name)
      return false
    end
    redis.call('SADD', K .. 'ob:' .. target, id)
    if not t.fx then -- every task with links has a wiring (hot paths read `ob` only then)
      t.fx = cmsgpack.pack({'', '', {}, 'fail', '', '', '0', '', ''}) -- no flow, no links
      redis.call('HSET', rkey(target), 'fx', t.fx)
    end
    note_links(target, t.fx, '1')
    if copy then
      redis.call('HSET', rkey(target), 'ob', '1')
      event(target, 'hedged', t.att, t.oid, id, t.n)
    else
      redis.call('HSET', rkey(target), 'ob', '1', 'jn', id)
    end
    return true
  end

  -- Store a new flow task (`fx`: its wiring; `rx` the result expiry should it end at once; the
  -- other arguments as `create` takes them) as a
  -- hash record: WAITING if it has parents, else queued or scheduled; indexed by its flow.
  -- True if it is listed claimable or scheduled (idle workers are woken).
  local function create_flow(id, q, pr, due, sched, dk, oid, seq, name, fx, rx)
    local digits = string.format('%012x', seq)
    local m = digits .. id
    local x = unpack_queued(digits .. q)
    local f = cmsgpack.unpack(fx)
    local fl = f[FX.fl] ~= '' and f[FX.fl] or nil
    local waiting = tonumber(f[FX.np]) > 0
    local st = waiting and 'waiting' or x[QF.st]
    if fl then
      hash_from(id, x, m, st, 0, 0, 'fx', fx, 'fl', fl)
      redis.call('ZADD', K .. 'fl:' .. fl, f[FX.at], id)
    else
      hash_from(id, x, m, st, 0, 0, 'fx', fx)
    end
    note_links(id, fx, nil)
    if dk ~= '' then redis.call('HSET', K .. 'dedup', dk, id) end
    if f[FX.ot] ~= '' and not link_outcome(id, x, f[FX.ot], f[FX.cp] == '1', name, rx) then
      return false
    end
    if waiting then
      zadd_later(K .. 'wait', seq, id)
      event(id, 'waiting', 0, oid, '', name)
    elseif sched == '1' then
      zadd_later(K .. 'sched', due, id)
      event(id, 'scheduled', 0, oid, '', name)
    else
      ready_add(pr, due, m)
      event(id, 'queued', 0, oid, '', name)
    end
    return not waiting
  end
  FLOWS = {unlist = unlist, load_linked = load_linked, arrive = arrive, settle = settle,
    create_flow = create_flow}
  return FLOWS
end

-- Apply the ends of the flow tasks this call ended (see `settle` in `flows`); nothing to do,
-- and nothing built, if it ended none.
local function settle()
  if #ENDED > 0 then flows().settle() end
end
