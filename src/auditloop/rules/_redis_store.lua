-- auditloop RedisStore: every rule update of one event in one atomic call.
--
-- Mirrors MemoryStore (src/auditloop/rules/_store.py and _windows.py) for
-- every rule kind and the alert lifecycle, so the same events give the same
-- transitions; tests feed random streams through both and compare.
--
-- ARGV: prefix, now ('' = the server's TIME), sweep limit, then
--   B, B event blobs (JSON),
--   W, W watch entries (cfg, base, key json)        -- Absence `expected`
--   update entries to the end, 7 fields each:
--     cfg, base, key json, time ('' = now), roles, blob # (0: none), value
-- Keys of a group: <base>:h, a hash (lifecycle, kind scalars x1.., evidence
-- ring e1..), and for Threshold, Ratio and Distinct <base>:w, a zset of
-- times; <prefix>due is a zset of group bases by re-check time.
-- Returns "<now> <flags per update> <next due or -> <groups deleted>", or
-- if anything changed, {that, change, change...};
-- a change is {update # (0: sweep), base, key json, status, at, value,
-- since, fired_at, evidence...}, or {0, base, '', 'suppressed'} for a
-- re-check that found the group cooling down. Numbers go back as '%.17g' strings (exact).
--
-- The file defines `main(ARGV)` and ends without calling it: the store
-- appends the call for its mode (_redis.py). On Redis >= 7 the file is
-- loaded once as a function library (FUNCTION LOAD; each event is one
-- FCALL, which runs only `main`); older servers get it as an EVAL script,
-- which runs the whole file -- defining every function -- on each call.

local INF, NEG_INF = 1 / 0, -1 / 0
local INACTIVE, PENDING, FIRING, SUPPRESSED = 0, 1, 2, 3

-- While a library loads, no global but `redis` (and of it, little) can be
-- read: main() sets these.
local call, format
-- The state of one call, set by main().
local prefix, due_key
local clock_ms -- key expiry is in real time whatever the window time is
local now -- window time: the server's TIME, or the caller's event time
local now_text -- fmt(now)
local stamp -- the time of the update being applied, as text
local scheduled -- the earliest re-check this call scheduled
local changes, expired

local function fmt(x)
  return format('%.17g', x)
end

-- Rule configuration "<kind>,<within>,<for>,<cooldown>,<keep>,<ttl ms>,<p>..."
-- t: threshold (at_least) r: ratio (above, min_count, max_events)
-- d: distinct (at_least)  a: absence        s: sequence (steps)
-- Parsed configs outlive a call in a function library: capped, as the
-- strings come from clients.
local configs, nconfigs = {}, 0
local function config(raw)
  local c = configs[raw]
  if c then
    return c
  end
  if nconfigs >= 1000 then
    configs, nconfigs = {}, 0
  end
  nconfigs = nconfigs + 1
  local kind, within, for_, cooldown, keep, ttl, params =
    string.match(raw, '^(%a),([^,]+),([^,]+),([^,]+),([^,]+),([^,]+),?(.*)$')
  local p1, p2, p3 = string.match(params, '^([^,]*),?([^,]*),?([^,]*)$')
  ttl = tonumber(ttl)
  c = {
    raw = raw, kind = kind, within = tonumber(within), for_ = tonumber(for_),
    cooldown = tonumber(cooldown), keep = tonumber(keep),
    p1 = tonumber(p1) or 0, p2 = tonumber(p2) or 0, p3 = tonumber(p3) or 0,
    tcf = kind == 'a', -- time alone can make it fire
    zset = kind == 't' or kind == 'r' or kind == 'd',
    ttl = ttl,
    -- Keys get ttl + slack and are refreshed only once less than ttl is left.
    lifetime = ttl + math.min(math.floor(ttl / 4), 10000),
  }
  -- Kind scalars x1..: t: member sequence; r: sequence, num, den;
  -- a: last seen; s: the latest start per step.
  local nx = 0
  if kind == 't' or kind == 'a' then
    nx = 1
  elseif kind == 'r' then
    nx = 3
  elseif kind == 's' then
    nx = c.p1
  end
  c.nx = nx
  local fields = { 'k', 'st', 'sn', 'fa', 'lf', 'du', 'ex', 'ec' }
  for i = 1, nx do
    fields[#fields + 1] = 'x' .. i
  end
  c.fields = fields
  configs[raw] = c
  return c
end

local function load(base, c)
  local h = base .. ':h'
  local v = call('HMGET', h, unpack(c.fields))
  local x = {}
  for i = 1, c.nx do
    x[i] = tonumber(v[8 + i])
  end
  return {
    base = base, h = h, w = base .. ':w', c = c, new = not v[1], k = v[1],
    st = tonumber(v[2]) or INACTIVE, sn = tonumber(v[3]) or 0,
    fa = tonumber(v[4]) or 0, lf = tonumber(v[5]) or NEG_INF,
    du = tonumber(v[6]), ex = tonumber(v[7]), ec = tonumber(v[8]) or 0,
    x = x, dirty = {},
  }
end

local function set(g, field, value)
  local d = g.dirty
  d[#d + 1] = field
  d[#d + 1] = value
end

local function flush(g)
  if #g.dirty > 0 then
    call('HSET', g.h, unpack(g.dirty))
    g.dirty = {}
  end
end

local function save(g)
  local c = g.c
  local refresh = g.new or not g.ex or g.ex - clock_ms < c.ttl
  if refresh then
    g.ex = clock_ms + c.lifetime
    set(g, 'ex', g.ex)
  end
  flush(g)
  if g.dudel then
    call('HDEL', g.h, 'du')
  end
  if refresh then
    call('PEXPIRE', g.h, c.lifetime)
    if c.zset then
      call('PEXPIRE', g.w, c.lifetime)
    end
  end
end

-- After a ZADD: a zset that had emptied (and vanished) comes back without
-- an expiry.
local function added(g, n)
  if n == 1 and not g.new then
    call('PEXPIRE', g.w, g.c.lifetime)
  end
end

local function oldest(g)
  return tonumber(call('ZRANGE', g.w, 0, 0, 'WITHSCORES')[2])
end

local function newest(g)
  return tonumber(call('ZRANGE', g.w, -1, -1, 'WITHSCORES')[2])
end

-- Evidence: a ring of the newest `keep` "<time> <event json>" in fields
-- e1..e<keep>; ec counts the entries ever added. The entry of the update
-- being applied is built once for all the rules that keep it (`stamp` is
-- its time as text: formatting numbers is costly in Lua).
local entry_stamp, entry_blob, entry
local function push_evidence(g, blob)
  if stamp ~= entry_stamp or blob ~= entry_blob then
    entry_stamp, entry_blob, entry = stamp, blob, stamp .. ' ' .. blob
  end
  local ec = g.ec + 1
  g.ec = ec
  set(g, 'ec', ec)
  set(g, 'e' .. ((ec - 1) % g.c.keep + 1), entry)
end

local function evidence_after(g, cutoff)
  local keep, ec = g.c.keep, g.ec
  local out = {}
  if keep == 0 or ec == 0 then
    return out
  end
  flush(g) -- entries added by this call
  local names = {}
  for i = math.max(1, ec - keep + 1), ec do
    names[#names + 1] = 'e' .. ((i - 1) % keep + 1)
  end
  for _, entry in ipairs(call('HMGET', g.h, unpack(names))) do
    if entry then
      local sp = string.find(entry, ' ', 1, true)
      if cutoff == nil or tonumber(string.sub(entry, 1, sp - 1)) > cutoff then
        out[#out + 1] = string.sub(entry, sp + 1)
      end
    end
  end
  return out
end

local function split(text)
  local out = {}
  if text and text ~= '' then
    for part in string.gmatch(text, '[^\n]+') do
      out[#out + 1] = part
    end
  end
  return out
end

-- Ratio: zset members "<sequence><roles>", num and den in x2, x3.
local function ratio_evict(g, cutoff)
  if g.num == nil then
    g.num, g.den = g.x[2] or 0, g.x[3] or 0
  end
  local gone = call('ZRANGEBYSCORE', g.w, '-inf', cutoff)
  if #gone > 0 then
    for _, member in ipairs(gone) do
      local r = tonumber(string.sub(member, -1))
      g.num = g.num - r % 2
      g.den = g.den - math.floor(r / 2)
    end
    call('ZREMRANGEBYSCORE', g.w, '-inf', cutoff)
    set(g, 'x2', g.num)
    set(g, 'x3', g.den)
  end
end

-- Sequence: the newest `keep` events of the chain that reached step i
-- (field c<i>), cached per call.
local function chain(g, i)
  g.chains = g.chains or {}
  local text = g.chains[i]
  if text == nil then
    text = call('HGET', g.h, 'c' .. i) or ''
    g.chains[i] = text
  end
  return text
end

-- -- the kinds (GroupState in _windows.py) -------------------------------------

local function holds(g, at)
  local c = g.c
  local kind = c.kind
  if kind == 't' or kind == 'd' then
    return call('ZCARD', g.w) == c.p1 and oldest(g) > at - c.within
  elseif kind == 'r' then
    ratio_evict(g, at - c.within)
    return g.den >= c.p2 and g.num / g.den > c.p1
  elseif kind == 'a' then
    return g.x[1] <= at - c.within
  end
  return (g.x[c.p1] or NEG_INF) > at - c.within
end

local function value(g, at)
  local c = g.c
  local kind = c.kind
  local cutoff = at - c.within
  if kind == 't' or kind == 'd' then
    return call('ZCOUNT', g.w, '(' .. fmt(cutoff), '+inf')
  elseif kind == 'r' then
    ratio_evict(g, cutoff)
    if g.den > 0 then
      return g.num / g.den
    end
    return 0
  elseif kind == 'a' then
    return at - g.x[1]
  end
  local n = 0
  for i = 1, c.p1 do
    if (g.x[i] or NEG_INF) > cutoff then
      n = n + 1
    end
  end
  return n
end

local function recent(g, at)
  local c = g.c
  local kind = c.kind
  if kind == 't' then
    return evidence_after(g, nil) -- while it holds, all are in the window
  elseif kind == 'r' or kind == 'd' then
    return evidence_after(g, at - c.within)
  elseif kind == 'a' then
    flush(g)
    local ev = call('HGET', g.h, 'ev')
    if ev then
      return { ev }
    end
    return {}
  elseif c.keep == 0 then
    return {}
  end
  return split(chain(g, c.p1))
end

local function next_change(g, at)
  local c = g.c
  local kind = c.kind
  if kind == 'r' then
    ratio_evict(g, at - c.within)
    local first = oldest(g)
    return first and first + c.within
  elseif kind == 'a' then
    if holds(g, at) then
      return nil
    end
    return g.x[1] + c.within
  elseif not holds(g, at) then
    return nil
  elseif kind == 's' then
    return g.x[c.p1] + c.within
  end
  return oldest(g) + c.within
end

local function idle(g, at)
  local c = g.c
  local kind = c.kind
  local cutoff = at - c.within
  if kind == 'a' then
    return false -- a watched group stays watched (until its keys expire)
  elseif kind == 's' then
    for i = 1, c.p1 do
      if (g.x[i] or NEG_INF) > cutoff then
        return false
      end
    end
    return true
  end
  local last = newest(g)
  return last == nil or last <= cutoff
end

-- Count one matching event; returns whether the condition holds (nil: the
-- event changed nothing) and flags (4: ratio overflow).
local function add(g, ts, roles, blob, distinct)
  local c = g.c
  local kind = c.kind
  local x = g.x
  if kind == 't' then
    local sq = (x[1] or 0) + 1
    x[1] = sq
    set(g, 'x1', sq)
    call('ZADD', g.w, ts, sq)
    local n = call('ZCARD', g.w)
    added(g, n)
    if n > c.p1 then
      call('ZREMRANGEBYRANK', g.w, 0, n - c.p1 - 1)
      n = c.p1
    end
    if blob then
      push_evidence(g, blob)
    end
    return n == c.p1 and oldest(g) > now - c.within, 0
  elseif kind == 'r' then
    -- Dropping what left the window first (MemoryStore drops it after the
    -- insert: the same state) makes `overflow` count only early drops.
    ratio_evict(g, now - c.within)
    local sq = (x[1] or 0) + 1
    x[1] = sq
    set(g, 'x1', sq)
    call('ZADD', g.w, ts, format('%012d%d', sq, roles))
    g.num = g.num + roles % 2
    g.den = g.den + math.floor(roles / 2)
    if blob and roles % 2 == 1 then
      push_evidence(g, blob)
    end
    local flags = 0
    local n = call('ZCARD', g.w)
    added(g, n)
    if n > c.p3 then
      local r = tonumber(string.sub(call('ZPOPMIN', g.w)[1], -1))
      g.num = g.num - r % 2
      g.den = g.den - math.floor(r / 2)
      flags = 4
    end
    set(g, 'x2', g.num)
    set(g, 'x3', g.den)
    return g.den >= c.p2 and g.num / g.den > c.p1, flags
  elseif kind == 'd' then
    local old = tonumber(call('ZSCORE', g.w, distinct))
    if old and old >= ts then
      return nil, 0 -- an older sighting of a value already counted
    end
    call('ZADD', g.w, ts, distinct)
    local n = call('ZCARD', g.w)
    added(g, n)
    if n > c.p1 then
      call('ZPOPMIN', g.w)
      n = c.p1
    end
    if blob then
      push_evidence(g, blob)
    end
    return n == c.p1 and oldest(g) > now - c.within, 0
  elseif kind == 'a' then
    if ts >= (x[1] or NEG_INF) then
      x[1] = ts
      set(g, 'x1', ts)
      if blob then
        set(g, 'ev', blob)
      end
    end
    return false, 0
  end
  -- Sequence. Highest step first: one event advances a chain by one step.
  local cutoff = now - c.within
  local keep = c.keep
  for j = c.p1 - 1, 0, -1 do
    if math.floor(roles / 2 ^ j) % 2 == 1 then
      if j == 0 then
        if ts >= (x[1] or NEG_INF) then
          x[1] = ts
          set(g, 'x1', ts)
          if keep > 0 then
            g.chains = g.chains or {}
            g.chains[1] = blob
            set(g, 'c1', blob)
          end
        end
      else
        local start = x[j] or NEG_INF
        if start > cutoff and start >= (x[j + 1] or NEG_INF) then
          x[j + 1] = start
          set(g, 'x' .. (j + 1), start)
          if keep > 0 then
            local events = split(chain(g, j))
            events[#events + 1] = blob
            while #events > keep do
              table.remove(events, 1)
            end
            local text = table.concat(events, '\n')
            g.chains[j + 1] = text
            set(g, 'c' .. (j + 1), text)
          end
        end
      end
    end
  end
  return (x[c.p1] or NEG_INF) > cutoff, 0
end

-- -- the lifecycle (MemoryStore._settle) -------------------------------------

local function schedule(g, due)
  if due ~= nil and (g.du == nil or due < g.du) then
    g.du = due
    g.dudel = false
    set(g, 'du', due)
    call('ZADD', due_key, due, g.base)
    if call('PTTL', due_key) < g.c.lifetime then
      call('PEXPIRE', due_key, g.c.lifetime)
    end
    if due < scheduled then
      scheduled = due
    end
  end
end

-- Returns the change (or nil) and flags (2: suppressed).
local function settle(g, holding, at)
  local c = g.c
  local status = g.st
  local change = nil
  local flags = 0
  if holding then
    if status ~= FIRING then
      if status == INACTIVE then
        g.sn = at
        set(g, 'sn', at)
      end
      if at < g.sn + c.for_ then
        g.st = PENDING
      elseif at < g.lf + c.cooldown then
        if status ~= SUPPRESSED then
          flags = 2
        end
        g.st = SUPPRESSED
      else
        g.st = FIRING
        g.fa = at
        g.lf = at
        set(g, 'fa', at)
        set(g, 'lf', at)
        local evidence = recent(g, at)
        set(g, 'fe', table.concat(evidence, '\n'))
        change = { 0, '', '', 'firing', fmt(at), fmt(value(g, at)), fmt(g.sn), fmt(at) }
        for _, e in ipairs(evidence) do
          change[#change + 1] = e
        end
      end
    end
  elseif status ~= INACTIVE then
    if status == FIRING then
      change = { 0, '', '', 'resolved', fmt(at), fmt(value(g, at)), fmt(g.sn),
                 fmt(g.fa) }
      for _, e in ipairs(split(call('HGET', g.h, 'fe'))) do
        change[#change + 1] = e
      end
      set(g, 'fe', '')
    end
    g.st = INACTIVE
  end
  if g.st ~= status then
    set(g, 'st', g.st)
  end
  status = g.st
  if status == INACTIVE and not c.tcf then
    -- Only events can make an inactive group fire: no re-check needed.
    if g.du ~= nil then
      call('ZREM', due_key, g.base)
      g.du = nil
      g.dudel = true
    end
  else
    local due = next_change(g, at)
    if status == PENDING or status == SUPPRESSED then
      local wait = math.max(g.sn + c.for_, g.lf + c.cooldown)
      if due == nil or wait < due then
        due = wait
      end
    end
    schedule(g, due)
  end
  return change, flags
end

-- Re-check one group whose time came (MemoryStore.advance): each due entry
-- is taken by exactly one call, so one process reports each transition.
local function recheck(base, at)
  call('ZREM', due_key, base)
  local raw = call('HGET', base .. ':h', 'c')
  if raw then
    local c = config(raw)
    local g = load(base, c)
    if g.du == at then -- else superseded: the group was rescheduled
      g.du = nil
      g.dudel = true
      local change, flag = settle(g, holds(g, at), at)
      if flag == 2 then -- counted by the caller as suppressed
        changes[#changes + 1] = { 0, base, '', 'suppressed' }
      end
      if g.st == INACTIVE and g.du == nil and g.lf + c.cooldown <= at
          and idle(g, at) then
        call('DEL', g.h, g.w)
        expired = expired + 1
      else
        save(g)
      end
      if change then
        change[2] = base
        change[3] = g.k
        changes[#changes + 1] = change
      end
    end
  end
end

-- Re-check due groups in time order, including those a re-check
-- rescheduled to a time still due, at most `limit`. A group left due past
-- the limit is re-checked before an update of it counts (see main), so the
-- limit delays only transitions of groups without new events.
local function sweep(limit)
  while limit > 0 do
    local due = call('ZRANGEBYSCORE', due_key, '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1)
    if due[1] == nil then
      return
    end
    recheck(due[1], tonumber(due[2]))
    limit = limit - 1
  end
end

-- -- main ---------------------------------------------------------------------

local function main(ARGV)
  call, format = redis.call, string.format
  prefix = ARGV[1]
  due_key = prefix .. 'due'
  local clock = call('TIME')
  clock_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
  now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
  if ARGV[2] ~= '' then
    now = tonumber(ARGV[2])
  end
  now_text = fmt(now)
  scheduled = INF
  changes = {}
  expired = 0
  entry_stamp = nil

  local p = 4
  local blobs = {}
  local nblobs = tonumber(ARGV[p])
  for i = 1, nblobs do
    blobs[i] = ARGV[p + i]
  end
  p = p + nblobs + 1
  local nwatch = tonumber(ARGV[p])
  p = p + 1
  for _ = 1, nwatch do
    local c = config(ARGV[p])
    local g = load(ARGV[p + 1], c)
    if g.new then -- watched from now, like a group seen just now
      set(g, 'k', ARGV[p + 2])
      set(g, 'c', c.raw)
      g.x[1] = now
      set(g, 'x1', now)
      settle(g, false, now)
      save(g)
    end
    p = p + 3
  end

  local hint = tonumber(call('ZRANGE', due_key, 0, 0, 'WITHSCORES')[2])
  local swept = false
  if hint and hint <= now then
    sweep(tonumber(ARGV[3]))
    swept = true
  end

  local flags = {}
  local index = 0
  while p + 6 <= #ARGV do
    index = index + 1
    local c = config(ARGV[p])
    local ts = now
    stamp = now_text
    if ARGV[p + 3] ~= '' then
      stamp = ARGV[p + 3]
      ts = tonumber(stamp)
    end
    local flag = 0
    if ts <= now - c.within then
      flag = 1 -- late: outside the window already
    else
      local base = ARGV[p + 1]
      local g = load(base, c)
      -- A re-check of this group that is due but was left to a later call
      -- (more groups were due than the sweep takes) comes first, as
      -- MemoryStore.advance runs before an event counts: else its
      -- resolution (or Absence firing) would be lost under the new event.
      local last = NEG_INF
      while g.du ~= nil and g.du <= now and g.du > last do
        last = g.du
        recheck(base, last)
        g = load(base, c)
      end
      if g.new then
        set(g, 'k', ARGV[p + 2])
        set(g, 'c', c.raw)
      end
      local blob = blobs[tonumber(ARGV[p + 5])]
      local holding
      holding, flag = add(g, ts, tonumber(ARGV[p + 4]), blob, ARGV[p + 6])
      if holding ~= nil then
        if holding or g.st ~= INACTIVE then
          local change, more = settle(g, holding, now)
          flag = flag + more
          if change then
            change[1] = index
            changes[#changes + 1] = change
          end
        elseif c.tcf and g.du == nil then
          schedule(g, next_change(g, now))
        end
        save(g)
      end
    end
    flags[index] = flag
    p = p + 7
  end

  if swept then
    hint = tonumber(call('ZRANGE', due_key, 0, 0, 'WITHSCORES')[2])
  end
  if scheduled < (hint or INF) then
    hint = scheduled
  end

  local head = now_text .. ' ' .. table.concat(flags, '') .. ' '
    .. (hint and fmt(hint) or '-') .. ' ' .. expired
  if #changes == 0 then
    return head -- the common case: one string is the cheapest reply to read
  end
  local result = { head }
  for _, change in ipairs(changes) do
    result[#result + 1] = change
  end
  return result
end
