-- Tollgate: decide a batch of independent requests, each atomically across its limits.
--
-- A line-by-line transcription of src/algorithm/{gcra,fixed_window,sliding_window,refund}.rs;
-- the conformance tests hold the two to identical answers. All arithmetic stays on
-- integers below 2^53, where Lua's doubles are exact (see src/algorithm/mod.rs).
--
-- Cost per call (what issue 16 measures as Redis CPU): one TIME for the whole batch, one
-- MGET for every key of the batch, and one SET ... PX per key that admitted. Every
-- redis.call crosses Lua -> Redis -> Lua with argument conversion, which is most of
-- the cost of a decision; the arithmetic itself is cheap. The rest is the script's own
-- Lua: the usual batch (one GCRA limit per request) takes a short path that defines no
-- function and builds two tables: up to 60 % less Redis CPU per call than the general
-- path, least for batches of new keys, whose SETs dominate (docs/benchmarks.md, "Redis
-- CPU per decision").
--
-- State: one string per limit, written with SET ... PX so the value and its time to live
-- are one command:
--   GCRA     "<tat>"                        theoretical arrival time, microseconds
--   windows  "<start_ms>:<current>:<previous>"
-- A value that does not parse (another algorithm's, a foreign value) reads as no state,
-- as the Rust algorithms read a State of the other kind. MGET answers nil for a key that
-- holds another type (a hash of the old format), so no key can make the script fail with
-- WRONGTYPE: such a key reads as no state and the SET replaces it.
--
-- KEYS     the keys of request 1's limits, then request 2's, ...
-- ARGV[1]  now in microseconds, or "" to use the Redis server's TIME (production)
-- ARGV[2]  extra milliseconds idle keys live past the point where they stop mattering
-- ARGV[3]  S, the number of distinct limits in the batch, then 5 values for each:
--          algorithm (0 gcra, 1 fixed, 2 sliding), quota, period_ms, burst, interval_us
-- then R, the number of requests, then per request:
--   n, cost, mode                 mode 0 plain, 1 charge, 2 probe, 3 refund (below)
--   n limit numbers (1..S)        which of the S limits each key is checked against
--   n marks                       only in mode 3
-- (Limits go once per batch, not once per request: Redis turns every argument into a
-- Lua string before the script runs, and that is part of each call's cost.)
--
-- Modes, for decisions that span Redis Cluster slots (store/redis/spanning.rs) and for
-- giving back units:
--   0 plain   decide every limit; write all of them only if all admit
--   1 charge  as plain, and append one mark per limit (0 when refused; see refund.rs)
--   2 probe   decide, never write (another slot refused the request)
--   3 refund  give back what the admission with that mark consumed, then report every
--             limit at cost 0
--
-- Returns per request, in order: 4 integers per limit (allowed 1/0, remaining,
-- reset_after_us, retry_after_us), then in mode 1 one mark per limit. State is written
-- only when every limit of the request admits it; on a refusal every verdict describes
-- the state as it is. Requests are decided one after the other against the state the
-- previous ones left, so two requests of one batch on the same key see each other. Each
-- key is written once, at the end, with its last state: a hot key shared by a whole
-- batch costs one SET, not one per request.

local now, now_ms
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
else
  now = tonumber(ARGV[1])
  now_ms = math.floor(now / 1000)
end
local grace_ms = tonumber(ARGV[2])

-- The batch's distinct limits, parsed once: limit s is spec[5s - 4 .. 5s] (algorithm,
-- quota, period_ms, burst, interval_us). One flat table, as every table a call creates
-- costs Redis CPU on every call.
local spec = {}
local nspecs = tonumber(ARGV[3])
for i = 1, 5 * nspecs do
  spec[i] = tonumber(ARGV[3 + i])
end

-- The common batch without the general machinery below: every request plain (mode 0)
-- with one GCRA limit. Lua creates a function value each time execution reaches a
-- `local function`, and every table costs allocations, on every call; this path returns
-- before any of them, with one table for the answers and one for the batch's keys.
-- The arithmetic is `decide`'s GCRA branch and `write`'s time to live, line for line;
-- tests/conformance.rs (`script_batches_agree`) holds both paths to the memory store,
-- batch by batch, repeated keys included.
local a = 5 + 5 * nspecs
local requests = tonumber(ARGV[a - 1])
local fast = true
for s = 1, nspecs do
  if spec[5 * s - 4] ~= 0 then fast = false break end
end
if fast and #KEYS == requests and requests <= 4000 then
  -- Requests are 4 arguments each (n, cost, mode, limit) up to the first that is not
  -- `1 _ 0 _`, so stepping by 4 stays aligned until it answers.
  for r = 0, requests - 1 do
    if ARGV[a + 4 * r] ~= '1' or ARGV[a + 4 * r + 2] ~= '0' then fast = false break end
  end
else
  fast = false
end
if fast then
  local values = redis.call('MGET', unpack(KEYS))
  local tats, out = {}, {}
  for r = 1, requests do
    local key = KEYS[r]
    local b = a + 4 * r - 4
    local cost = tonumber(ARGV[b + 1])
    local sb = 5 * tonumber(ARGV[b + 3]) - 4
    local window_ms, burst, interval = spec[sb + 2], spec[sb + 3], spec[sb + 4]
    local capacity = burst * interval
    local tat = tats[key]
    if tat == nil then tat = tonumber(values[r]) end
    if tat == nil or tat <= now then tat = now end
    local p = 4 * r - 4
    local left = capacity - (tat - now)
    if cost > burst then
      out[p + 1], out[p + 2], out[p + 3], out[p + 4] =
        0, left < 0 and 0 or math.floor(left / interval), tat - now, window_ms * 1000
    else
      local new_tat = tat + cost * interval
      local allow_at = new_tat - capacity
      if allow_at > now then
        out[p + 1], out[p + 2], out[p + 3], out[p + 4] =
          0, left < 0 and 0 or math.floor(left / interval), tat - now, allow_at - now
      else
        local room = capacity - (new_tat - now)
        out[p + 1], out[p + 2], out[p + 3], out[p + 4] =
          1, room < 0 and 0 or math.floor(room / interval), new_tat - now, 0
        tats[key] = new_tat
      end
    end
  end
  for key, tat in pairs(tats) do
    local ms = math.floor((tat - now + 999) / 1000) + grace_ms
    if ms < 1 then ms = 1 end
    redis.call('SET', key, tat, 'PX', ms)
  end
  return out
end

local function clamp(v)
  if v < 0 then return 0 end
  return v
end

local function idiv(a, b)
  return math.floor(a / b)
end

-- The sliding window's reset_after for a current count `cur` (a function, not a closure
-- made per decision).
local function sliding_reset(cur, previous, start_ms, window_ms)
  if cur > 0 then return (start_ms + 2 * window_ms) * 1000 - now end
  if previous > 0 then return (start_ms + window_ms) * 1000 - now end
  return 0
end

-- Decides limit s for a request of weight `cost` against the stored state read by
-- `fields` (h1: the TAT; h2, h3, h4: window start, current, previous). Returns allowed,
-- remaining, reset_after, retry_after and, when the request is committed, the state to
-- store (w1, w2, w3: as h1 for GCRA, as h2..h4 for windows) and its time to live in
-- microseconds; w1 is nil when nothing needs storing. Multiple values rather than a
-- table: no allocation per decision.
local function decide(s, h1, h2, h3, h4, cost)
  local b = 5 * s - 4
  local algo = spec[b]
  local quota = spec[b + 1]
  local window_ms = spec[b + 2]
  local burst = spec[b + 3]
  local interval = spec[b + 4]
  local allowed, remaining, reset_after, retry_after, w1, w2, w3, wttl

  if algo == 0 then
    local capacity = burst * interval
    local tat = h1
    if tat == nil or tat <= now then tat = now end
    if cost > burst then
      allowed, remaining, reset_after, retry_after =
        0, clamp(idiv(capacity - (tat - now), interval)), tat - now, window_ms * 1000
    else
      local new_tat = tat + cost * interval
      local allow_at = new_tat - capacity
      if allow_at > now then
        allowed, remaining, reset_after, retry_after =
          0, clamp(idiv(capacity - (tat - now), interval)), tat - now, allow_at - now
      else
        allowed, remaining, reset_after, retry_after =
          1, clamp(idiv(capacity - (new_tat - now), interval)), new_tat - now, 0
        w1, wttl = new_tat, new_tat - now
      end
    end
  else
    local start_ms = now_ms - (now_ms % window_ms)
    local stored = h2
    local current, previous = 0, 0
    if stored == start_ms then
      current, previous = h3 or 0, h4 or 0
    elseif stored == start_ms - window_ms then
      previous = h3 or 0
    end

    if algo == 1 then
      local window_end = (start_ms + window_ms) * 1000 - now
      local reset = 0
      if current > 0 then reset = window_end end
      if cost > quota then
        allowed, remaining, reset_after, retry_after = 0, clamp(quota - current), reset, window_ms * 1000
      elseif current + cost > quota then
        allowed, remaining, reset_after, retry_after = 0, clamp(quota - current), reset, window_end
      else
        current = current + cost
        if current > 0 then reset = window_end end
        allowed, remaining, reset_after, retry_after = 1, clamp(quota - current), reset, 0
        w1, w2, w3, wttl = start_ms, current, 0, window_end
      end
    else
      local elapsed_ms = now_ms - start_ms
      local used = previous * (window_ms - elapsed_ms) + current * window_ms
      local capacity = quota * window_ms
      if cost > quota then
        allowed, remaining, reset_after, retry_after =
          0, clamp(idiv(capacity - used, window_ms)), sliding_reset(current, previous, start_ms, window_ms), window_ms * 1000
      elseif used + cost * window_ms > capacity then
        local retry_at_ms
        if current + cost <= quota then
          local room = quota - cost - current
          retry_at_ms = start_ms + window_ms - idiv(room * window_ms, previous)
        else
          local room = quota - cost
          local wait = window_ms - idiv(room * window_ms, current)
          if wait < 0 then wait = 0 end
          retry_at_ms = start_ms + window_ms + wait
        end
        allowed, remaining, reset_after, retry_after =
          0, clamp(idiv(capacity - used, window_ms)), sliding_reset(current, previous, start_ms, window_ms), retry_at_ms * 1000 - now
      else
        current = current + cost
        used = used + cost * window_ms
        allowed, remaining, reset_after, retry_after =
          1, clamp(idiv(capacity - used, window_ms)), sliding_reset(current, previous, start_ms, window_ms), 0
        w1, w2, w3, wttl = start_ms, current, previous, (start_ms + 2 * window_ms) * 1000 - now
      end
    end
  end

  return allowed, remaining, reset_after, retry_after, w1, w2, w3, wttl
end

-- Gives back `cost` of limit s, charged by an admission that left `mark`, against the
-- stored state (as `decide` takes it; src/algorithm/refund.rs). Returns the state to
-- store and its time to live as `decide` does, or nil.
local function refund(s, h1, h2, h3, h4, mark, cost)
  if cost == 0 then return nil end
  local b = 5 * s - 4
  local algo = spec[b]
  local window_ms = spec[b + 2]
  local interval = spec[b + 4]
  if algo == 0 then
    local tat = h1
    if tat == nil or tat <= now then return nil end
    local give = cost * interval
    local kept = now - (mark - give)
    if kept < 0 then kept = 0 end
    if kept > give then kept = give end
    local back = give - kept
    if back == 0 then return nil end
    tat = tat - back
    return tat, nil, nil, clamp(tat - now)
  end
  local stored = h2
  if stored == nil then return nil end
  local current, previous = h3 or 0, h4 or 0
  if stored == mark then
    current = clamp(current - cost)
  elseif algo == 2 and stored == mark + window_ms then
    previous = clamp(previous - cost)
  else
    return nil
  end
  local ends_ms = stored + window_ms
  if algo == 2 then ends_ms = stored + 2 * window_ms end
  return stored, current, previous, clamp(ends_ms * 1000 - now)
end

-- The value of every key as the batch goes: read once with MGET (in chunks, as unpack
-- is bounded by Lua's stack), then updated by every write, so a later request on the
-- same key sees it without another read.
local state = {}
local nkeys = #KEYS
local chunk = 4000
for first = 1, nkeys, chunk do
  local last = math.min(first + chunk - 1, nkeys)
  local values = redis.call('MGET', unpack(KEYS, first, last))
  for i = first, last do
    state[KEYS[i]] = values[i - first + 1]
  end
end

-- The state of `key` as limit s reads it: the TAT for GCRA; start, current and previous
-- for the windows; nils for no state. A value of another algorithm or a foreign value
-- reads as no state, as the Rust algorithms read a State of the other kind.
local function fields(s, key)
  local v = state[key]
  if spec[5 * s - 4] == 0 then
    return tonumber(v)
  end
  if type(v) ~= 'string' then return nil end
  local st, c, p = string.match(v, '^(%-?%d+):(%-?%d+):(%-?%d+)$')
  if st then return nil, tonumber(st), tonumber(c), tonumber(p) end
  return nil
end

-- Writes wait until every request is decided: each key is written once, with its last
-- state and that state's time to live.
local dirty, dirty_ms, ndirty = {}, {}, 0

local function write(key, w1, w2, w3, wttl)
  if w2 then
    -- %d, not tostring: tostring rounds to 14 digits.
    state[key] = string.format('%d:%d:%d', w1, w2, w3)
  else
    -- A number reaches Redis printed exactly (integers below 2^53).
    state[key] = w1
  end
  -- PX must be positive; a state whose time is up reads as no state anyway.
  local ms = math.floor((wttl + 999) / 1000) + grace_ms
  if ms < 1 then ms = 1 end
  if not dirty_ms[key] then
    ndirty = ndirty + 1
    dirty[ndirty] = key
  end
  dirty_ms[key] = ms
end

-- Per limit i of the request being decided, reused across requests: at 9(i-1) + 1..9
-- its limit number, its state (4) and the state its admission would store (4).
local scratch = {}

local out = {}
local k = 0                  -- keys of the requests before this one
a = 5 + 5 * nspecs           -- this request's first ARGV
for _ = 1, requests do
  local n, cost, mode = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local o = #out
  a = a + 3

  if mode == 3 then
    for i = 1, n do
      local key, s = KEYS[k + i], tonumber(ARGV[a + i - 1])
      local h1, h2, h3, h4 = fields(s, key)
      local w1, w2, w3, wttl = refund(s, h1, h2, h3, h4, tonumber(ARGV[a + n + i - 1]), cost)
      if w1 then write(key, w1, w2, w3, wttl) end
      h1, h2, h3, h4 = fields(s, key)
      local p = o + 4 * (i - 1)
      out[p + 1], out[p + 2], out[p + 3], out[p + 4] = decide(s, h1, h2, h3, h4, 0)
    end
    a = a + 2 * n
  else
    local all = true
    for i = 1, n do
      local s = tonumber(ARGV[a + i - 1])
      local h1, h2, h3, h4 = fields(s, KEYS[k + i])
      local allowed, remaining, reset_after, retry_after, w1, w2, w3, wttl =
        decide(s, h1, h2, h3, h4, cost)
      local x = 9 * (i - 1)
      scratch[x + 1], scratch[x + 2], scratch[x + 3], scratch[x + 4], scratch[x + 5] =
        s, h1, h2, h3, h4
      scratch[x + 6], scratch[x + 7], scratch[x + 8], scratch[x + 9] = w1, w2, w3, wttl
      if allowed == 0 then all = false end
      local p = o + 4 * (i - 1)
      out[p + 1], out[p + 2], out[p + 3], out[p + 4] = allowed, remaining, reset_after, retry_after
    end
    a = a + n

    if all and mode ~= 2 then
      for i = 1, n do
        local x = 9 * (i - 1)
        local w1 = scratch[x + 6]
        if w1 then write(KEYS[k + i], w1, scratch[x + 7], scratch[x + 8], scratch[x + 9]) end
        if mode == 1 then
          -- The mark: the TAT or the window start the admission stored.
          out[o + 4 * n + i] = w1 or 0
        end
      end
    else
      -- Refused: nothing was consumed, so a limit that would have admitted reports its
      -- state as it is (decided again at cost 0), not as if this request had been counted.
      for i = 1, n do
        local p = o + 4 * (i - 1)
        if out[p + 1] == 1 then
          local x = 9 * (i - 1)
          out[p + 1], out[p + 2], out[p + 3], out[p + 4] = decide(
            scratch[x + 1], scratch[x + 2], scratch[x + 3], scratch[x + 4], scratch[x + 5], 0)
        end
        if mode == 1 then out[o + 4 * n + i] = 0 end
      end
    end
  end
  k = k + n
end

for i = 1, ndirty do
  local key = dirty[i]
  redis.call('SET', key, state[key], 'PX', dirty_ms[key])
end

return out
