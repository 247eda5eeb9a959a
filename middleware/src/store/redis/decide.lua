-- Tollgate: decide a batch of independent requests, each atomically across its limits.
--
-- A line-by-line transcription of src/algorithm/{gcra,fixed_window,sliding_window,refund}.rs;
-- the conformance tests hold the two to identical answers. All arithmetic stays on
-- integers below 2^53, where Lua's doubles are exact (see src/algorithm/mod.rs).
--
-- Cost per call (what issue 16 measures as Redis CPU): one TIME for the whole batch, one
-- MGET for every key of the batch, and one SET ... PX per limit that admits. Every
-- redis.call crosses Lua -> Redis -> Lua with argument conversion, which is most of
-- the cost of a decision; the arithmetic itself is cheap.
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
-- ARGV[3]  R, the number of requests in the batch
-- then per request:
--   n, cost, mode                 mode 0 plain, 1 charge, 2 probe, 3 refund (below)
--   5 per limit                   algorithm (0 gcra, 1 fixed, 2 sliding), quota,
--                                 period_ms, burst, interval_us
--   n marks                       only in mode 3
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
-- previous ones left, so two requests of one batch on the same key see each other.

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
local requests = tonumber(ARGV[3])

local function clamp(v)
  if v < 0 then return 0 end
  return v
end

local function idiv(a, b)
  return math.floor(a / b)
end

-- Decides the limit whose spec starts at ARGV[base] for a request of weight `cost`
-- against its stored fields `h` (see `fields`). Returns allowed, remaining, reset_after,
-- retry_after and the write to make if the request is committed (nil when nothing needs
-- writing).
local function decide(base, h, cost)
  local algo = tonumber(ARGV[base])
  local quota = tonumber(ARGV[base + 1])
  local window_ms = tonumber(ARGV[base + 2])
  local burst = tonumber(ARGV[base + 3])
  local interval = tonumber(ARGV[base + 4])
  local allowed, remaining, reset_after, retry_after, write

  if algo == 0 then
    local capacity = burst * interval
    local tat = tonumber(h[1])
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
        write = { new_tat, ttl = new_tat - now }
      end
    end
  else
    local start_ms = now_ms - (now_ms % window_ms)
    local stored = tonumber(h[2])
    local current, previous = 0, 0
    if stored == start_ms then
      current, previous = tonumber(h[3]) or 0, tonumber(h[4]) or 0
    elseif stored == start_ms - window_ms then
      previous = tonumber(h[3]) or 0
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
        write = { start_ms, current, 0, ttl = window_end }
      end
    else
      local elapsed_ms = now_ms - start_ms
      local used = previous * (window_ms - elapsed_ms) + current * window_ms
      local capacity = quota * window_ms
      local function reset_for(cur)
        if cur > 0 then return (start_ms + 2 * window_ms) * 1000 - now end
        if previous > 0 then return (start_ms + window_ms) * 1000 - now end
        return 0
      end
      if cost > quota then
        allowed, remaining, reset_after, retry_after =
          0, clamp(idiv(capacity - used, window_ms)), reset_for(current), window_ms * 1000
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
          0, clamp(idiv(capacity - used, window_ms)), reset_for(current), retry_at_ms * 1000 - now
      else
        current = current + cost
        used = used + cost * window_ms
        allowed, remaining, reset_after, retry_after =
          1, clamp(idiv(capacity - used, window_ms)), reset_for(current), 0
        write = { start_ms, current, previous, ttl = (start_ms + 2 * window_ms) * 1000 - now }
      end
    end
  end

  return allowed, remaining, reset_after, retry_after, write
end

-- Gives back `cost` of the limit at ARGV[base], charged by an admission that left
-- `mark`, against its stored fields `h` (src/algorithm/refund.rs). Returns the write to
-- make, or nil.
local function refund(base, h, mark, cost)
  if cost == 0 then return nil end
  local algo = tonumber(ARGV[base])
  local window_ms = tonumber(ARGV[base + 2])
  local interval = tonumber(ARGV[base + 4])
  if algo == 0 then
    local tat = tonumber(h[1])
    if tat == nil or tat <= now then return nil end
    local give = cost * interval
    local kept = now - (mark - give)
    if kept < 0 then kept = 0 end
    if kept > give then kept = give end
    local back = give - kept
    if back == 0 then return nil end
    tat = tat - back
    return { tat, ttl = clamp(tat - now) }
  end
  local stored = tonumber(h[2])
  if stored == nil then return nil end
  local current, previous = tonumber(h[3]) or 0, tonumber(h[4]) or 0
  if stored == mark then
    current = clamp(current - cost)
  elseif algo == 2 and stored == mark + window_ms then
    previous = clamp(previous - cost)
  else
    return nil
  end
  local ends_ms = stored + window_ms
  if algo == 2 then ends_ms = stored + 2 * window_ms end
  return { stored, current, previous, ttl = clamp(ends_ms * 1000 - now) }
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

-- The stored value as the fields the algorithms read: { tat } or { nil, start, current,
-- previous }; {} for no state.
local function fields(v)
  if type(v) == 'number' then return { v } end
  if not v then return {} end
  local s, c, p = string.match(v, '^(%-?%d+):(%-?%d+):(%-?%d+)$')
  if s then return { nil, tonumber(s), tonumber(c), tonumber(p) } end
  return { tonumber(v) }
end

local function write(key, w)
  local value
  if w[2] then
    -- %d, not tostring: tostring rounds to 14 digits.
    value = string.format('%d:%d:%d', w[1], w[2], w[3])
  else
    -- A number argument reaches Redis printed exactly (integers below 2^53).
    value = w[1]
  end
  -- PX must be positive; a state whose time is up reads as no state anyway.
  local ms = math.floor((w.ttl + 999) / 1000) + grace_ms
  if ms < 1 then ms = 1 end
  redis.call('SET', key, value, 'PX', ms)
  state[key] = value
end

local out = {}
local k = 0   -- keys of the requests before this one
local a = 4   -- this request's first ARGV
for _ = 1, requests do
  local n, cost, mode = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local specs = a + 3
  a = specs + 5 * n
  local o = #out

  if mode == 3 then
    for i = 1, n do
      local key, base = KEYS[k + i], specs + 5 * (i - 1)
      local w = refund(base, fields(state[key]), tonumber(ARGV[a + i - 1]), cost)
      if w then write(key, w) end
      local p = o + 4 * (i - 1)
      out[p + 1], out[p + 2], out[p + 3], out[p + 4] = decide(base, fields(state[key]), 0)
    end
    a = a + n
  else
    local hs, writes, all = {}, {}, true
    for i = 1, n do
      local h = fields(state[KEYS[k + i]])
      local allowed, remaining, reset_after, retry_after, w = decide(specs + 5 * (i - 1), h, cost)
      hs[i] = h
      if allowed == 0 then all = false end
      writes[i] = w
      local p = o + 4 * (i - 1)
      out[p + 1], out[p + 2], out[p + 3], out[p + 4] = allowed, remaining, reset_after, retry_after
    end

    if all and mode ~= 2 then
      for i = 1, n do
        local w = writes[i]
        if w then write(KEYS[k + i], w) end
        if mode == 1 then
          -- The mark: the TAT or the window start the admission stored.
          out[o + 4 * n + i] = (w and w[1]) or 0
        end
      end
    else
      -- Refused: nothing was consumed, so a limit that would have admitted reports its
      -- state as it is (decided again at cost 0), not as if this request had been counted.
      for i = 1, n do
        local p = o + 4 * (i - 1)
        if out[p + 1] == 1 then
          out[p + 1], out[p + 2], out[p + 3], out[p + 4] = decide(specs + 5 * (i - 1), hs[i], 0)
        end
        if mode == 1 then out[o + 4 * n + i] = 0 end
      end
    end
  end
  k = k + n
end

return out
