-- Tollgate: decide every limit of one request atomically.
--
-- A line-by-line transcription of src/algorithm/{gcra,fixed_window,sliding_window}.rs;
-- the conformance tests hold the two to identical answers. All arithmetic stays on
-- integers below 2^53, where Lua's doubles are exact (see src/algorithm/mod.rs).
--
-- KEYS[i]  the state of limit i: a hash with fields t (GCRA) or w, c, p (windows)
-- ARGV[1]  now in microseconds, or "" to use the Redis server's TIME (production)
-- ARGV[2]  cost of the request
-- ARGV[3]  extra milliseconds idle keys live past the point where they stop mattering
-- ARGV[4 + 5(i-1) ..] for limit i: algorithm (0 gcra, 1 fixed, 2 sliding), quota,
--          period_ms, burst, interval_us
--
-- ARGV[4 + 5n] (optional, n = #KEYS) a mode, for decisions that span Redis Cluster slots
--          (store/redis/spanning.rs; src/algorithm/refund.rs is the Rust twin of `refund`):
--            'charge'  as without a mode, and append one mark per limit (see refund.rs)
--            'probe'   decide, never write (another slot refused the request)
--            'refund'  ARGV[5 + 5n ..] one mark per limit: give back what the admission
--                      with that mark consumed, then report every limit at cost 0
--
-- Returns 4 integers per limit: allowed (1/0), remaining, reset_after_us, retry_after_us.
-- State is written only when every limit admits the request; on a refusal every verdict
-- describes the state as it is.

local now, now_ms
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
else
  now = tonumber(ARGV[1])
  now_ms = math.floor(now / 1000)
end
local cost = tonumber(ARGV[2])
local grace_ms = tonumber(ARGV[3])

local function clamp(v)
  if v < 0 then return 0 end
  return v
end

local function idiv(a, b)
  return math.floor(a / b)
end

-- Decides limit i for a request of weight `cost` against its stored fields `h`.
-- Returns allowed, remaining, reset_after, retry_after and the write to make if the
-- request is committed (nil when nothing needs writing).
local function decide(i, h, cost)
  local base = 4 + 5 * (i - 1)
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
        write = { 't', new_tat, ttl = new_tat - now }
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
        write = { 'w', start_ms, 'c', current, 'p', 0, ttl = window_end }
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
        write = { 'w', start_ms, 'c', current, 'p', previous,
                  ttl = (start_ms + 2 * window_ms) * 1000 - now }
      end
    end
  end

  return allowed, remaining, reset_after, retry_after, write
end

-- Gives back `cost` of limit i, charged by an admission that left `mark`, against its
-- stored fields `h` (src/algorithm/refund.rs). Returns the write to make, or nil.
local function refund(i, h, mark)
  if cost == 0 then return nil end
  local base = 4 + 5 * (i - 1)
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
    return { 't', tat, ttl = clamp(tat - now) }
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
  return { 'w', stored, 'c', current, 'p', previous, ttl = clamp(ends_ms * 1000 - now) }
end

local function write(key, w)
  redis.call('HSET', key, unpack(w))
  redis.call('PEXPIRE', key, math.floor((w.ttl + 999) / 1000) + grace_ms)
end

local n = #KEYS
local mode = ARGV[4 + 5 * n]

if mode == 'refund' then
  local out = {}
  for i = 1, n do
    local h = redis.call('HMGET', KEYS[i], 't', 'w', 'c', 'p')
    local w = refund(i, h, tonumber(ARGV[4 + 5 * n + i]))
    if w then
      write(KEYS[i], w)
      h = redis.call('HMGET', KEYS[i], 't', 'w', 'c', 'p')
    end
    local o = 4 * (i - 1)
    out[o + 1], out[o + 2], out[o + 3], out[o + 4] = decide(i, h, 0)
  end
  return out
end

local out, fields, writes, all = {}, {}, {}, true

for i = 1, n do
  local h = redis.call('HMGET', KEYS[i], 't', 'w', 'c', 'p')
  local allowed, remaining, reset_after, retry_after, w = decide(i, h, cost)
  fields[i] = h
  if allowed == 0 then all = false end
  writes[i] = w
  local o = 4 * (i - 1)
  out[o + 1], out[o + 2], out[o + 3], out[o + 4] = allowed, remaining, reset_after, retry_after
end

if all and mode ~= 'probe' then
  for i = 1, n do
    local w = writes[i]
    if w then write(KEYS[i], w) end
    if mode == 'charge' then
      -- The mark: the TAT or the window start the admission stored.
      out[4 * n + i] = (w and w[2]) or 0
    end
  end
else
  -- Refused: nothing was consumed, so a limit that would have admitted reports its
  -- state as it is (decided again at cost 0), not as if this request had been counted.
  for i = 1, n do
    local o = 4 * (i - 1)
    if out[o + 1] == 1 then
      local allowed, remaining, reset_after, retry_after = decide(i, fields[i], 0)
      out[o + 1], out[o + 2], out[o + 3], out[o + 4] = allowed, remaining, reset_after, retry_after
    end
  end
end

return out
