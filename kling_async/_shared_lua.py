"""The Lua scripts the Redis coordinator runs: each is one atomic step, timed by Redis `TIME`.

No process's own clock is ever compared with another's: expiry scores, probe timers, the rate
bucket's refill and the settle window after a restart are all Redis milliseconds.

Slot keys (KEYS, in this order, for every slot script):
  1 leases   ZSET lease id → expiry ms        (a slot held from create until the task ended)
  2 probing  SET  lease ids above `confirmed` (creates whose answer is not in yet)
  3 queue    ZSET waiter id → arrival number  (the account-wide FIFO of waiting creates)
  4 beats    ZSET waiter id → heartbeat expiry (a dead waiter leaves the queue by itself)
  5 gate     HASH limit, confirmed, backoff, probe_open, last_change, settle, rejections
  6 epoch    STRING the Redis "life" (ms it was created): tells a restart from a first start
  7 seq      STRING arrival counter
ARGV[1] is always the pub/sub channel woken when slots may have come free, ARGV[2] the epoch
the caller last saw ('' if none), ARGV[3] the lease TTL in ms.
"""

from __future__ import annotations

__all__ = [
    "ACCEPTED",
    "ACQUIRE",
    "KEEP",
    "LEADER_CLAIM",
    "LEADER_RESIGN",
    "PUBLISH",
    "RATE_CUT",
    "RATE_SET",
    "RATE_TAKE",
    "REJECTED",
    "WATCH",
]

# Shared by the slot scripts: the clock, the epoch/settle check and the expiry sweep.
_SLOT_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local chan, known, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local idle = math.max(ttl * 8, 60000)  -- state outlives its last user by this much
-- A missing epoch is a fresh Redis. If the caller knew an older one, Redis lost our state
-- (restarted without persistence): no grants for one TTL from the new epoch, so every live
-- holder re-adds its leases first and nothing is counted twice or not at all.
local epoch = redis.call('GET', KEYS[6])
if not epoch then
  epoch = tostring(now)
  redis.call('SET', KEYS[6], epoch)
end
redis.call('PEXPIRE', KEYS[6], idle)
if known ~= '' and known ~= epoch then
  local until_ms = tonumber(epoch) + ttl
  local settle = tonumber(redis.call('HGET', KEYS[5], 'settle') or '0')
  if until_ms > now and until_ms > settle then redis.call('HSET', KEYS[5], 'settle', until_ms) end
end
local function num(field, default)
  return tonumber(redis.call('HGET', KEYS[5], field) or default)
end
-- Leases whose holder stopped renewing (killed, partitioned) give their slots back here.
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('SREM', KEYS[2], id)
end
if #expired > 0 then redis.call('PUBLISH', chan, 'expired') end
-- A waiter whose process stopped heart-beating leaves the queue, so it blocks no one.
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now)) do
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZREM', KEYS[4], id)
end
for i = 1, 5 do redis.call('PEXPIRE', KEYS[i], idle) end
"""

#: ARGV 4.. : maximum, probe_interval_ms, slow_start (0/1), ramp, then this process's waiter
#: ids, oldest first. Returns {epoch, flags, limit, in_use, wait_ms}; flags[i] is 0 (wait),
#: 1 (granted) or 2 (granted above the confirmed level: a probe).
ACQUIRE = (
    _SLOT_PRELUDE
    + """
local maximum, interval = tonumber(ARGV[4]), tonumber(ARGV[5])
local slow_start, ramp = ARGV[6] == '1', tonumber(ARGV[7])
local limit = num('limit', maximum)
local wait = ttl / 3
-- Timed probe, one at a time account-wide: after `interval` (× back-off) without a change,
-- raise the learned limit by one. `last_change` moves, so no other process raises it again.
if limit < maximum then
  local step = interval * num('backoff', 1)
  local due = num('last_change', 0) + step - now
  if due <= 0 then
    limit = limit + 1
    redis.call('HSET', KEYS[5], 'limit', limit, 'probe_open', 1, 'last_change', now)
    redis.call('PUBLISH', chan, 'probe')
    if limit < maximum then wait = math.min(wait, step) end
  else
    wait = math.min(wait, due)
  end
end
local cap = math.min(limit, maximum)
local confirmed = num('confirmed', 0)
local in_use = redis.call('ZCARD', KEYS[1])
local settle = num('settle', 0)
local flags = {}
for i = 8, #ARGV do
  local id = ARGV[i]
  local flag = 0
  if redis.call('ZSCORE', KEYS[1], id) then
    -- Granted by an earlier call whose answer was lost: the same lease, not a second one.
    flag = redis.call('SISMEMBER', KEYS[2], id) == 1 and 2 or 1
  else
    if not redis.call('ZSCORE', KEYS[3], id) then
      redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[7]), id)
    end
    redis.call('ZADD', KEYS[4], now + ttl, id)
    local rank = redis.call('ZRANK', KEYS[3], id)
    -- FIFO: only the first (free) waiters of the whole account may take a slot, so a later
    -- arrival never overtakes an earlier one that fits; slow start lets at most `ramp`
    -- unconfirmed creates out above the level Kling has accepted.
    local ramp_ok = (not slow_start) or in_use < confirmed or redis.call('SCARD', KEYS[2]) < ramp
    if now >= settle and rank < cap - in_use and ramp_ok then
      redis.call('ZREM', KEYS[3], id)
      redis.call('ZREM', KEYS[4], id)
      redis.call('ZADD', KEYS[1], now + ttl, id)
      in_use = in_use + 1
      flag = 1
      if in_use > confirmed then
        redis.call('SADD', KEYS[2], id)
        flag = 2
      end
    end
  end
  flags[#flags + 1] = flag
end
if now < settle then wait = settle - now end
return {epoch, flags, cap, in_use, math.max(1, math.floor(wait))}
"""
)

#: One call per process per renewal period. ARGV 4.. : n_release, release ids, n_hold, hold
#: ids (running tasks found on resume: proven level), then the ids to renew. Renewal is an
#: unconditional ZADD, so leases lost with a restarted Redis are re-established. Returns
#: {epoch, in_use}.
KEEP = (
    _SLOT_PRELUDE
    + """
local i = 4
local n_release = tonumber(ARGV[i])
local freed = 0
for j = i + 1, i + n_release do
  freed = freed + redis.call('ZREM', KEYS[1], ARGV[j])
  redis.call('SREM', KEYS[2], ARGV[j])
  redis.call('ZREM', KEYS[3], ARGV[j])
  redis.call('ZREM', KEYS[4], ARGV[j])
end
i = i + n_release + 1
local n_hold = tonumber(ARGV[i])
for j = i + 1, #ARGV do redis.call('ZADD', KEYS[1], now + ttl, ARGV[j]) end
local in_use = redis.call('ZCARD', KEYS[1])
if n_hold > 0 and in_use > num('confirmed', 0) then
  redis.call('HSET', KEYS[5], 'confirmed', in_use)
end
if freed > 0 then redis.call('PUBLISH', chan, 'released') end
return {epoch, in_use}
"""
)

#: ARGV 4: lease id, 5: probe_interval_ms. The create on this lease was accepted: the level
#: held is proven; an open timed probe that reached the limit succeeded, so the next one is due
#: at once. Returns {epoch, limit (-1: never learned), in_use}.
ACCEPTED = (
    _SLOT_PRELUDE
    + """
redis.call('SREM', KEYS[2], ARGV[4])
local in_use = redis.call('ZCARD', KEYS[1])
if in_use > num('confirmed', 0) then redis.call('HSET', KEYS[5], 'confirmed', in_use) end
local limit = num('limit', -1)
if num('probe_open', 0) == 1 and limit >= 0 and in_use >= limit then
  redis.call('HSET', KEYS[5], 'probe_open', 0, 'backoff', 1,
             'last_change', now - tonumber(ARGV[5]))
end
redis.call('PUBLISH', chan, 'accepted')
return {epoch, limit, in_use}
"""
)

#: ARGV 4: lease id. Kling answered 1303: that lease goes, the account-wide limit becomes what
#: all our processes still hold (0: someone else fills the account; only timed probes then).
#: A refused timed probe doubles the wait before the next (at most 2×). Returns like ACCEPTED.
REJECTED = (
    _SLOT_PRELUDE
    + """
redis.call('ZREM', KEYS[1], ARGV[4])
redis.call('SREM', KEYS[2], ARGV[4])
local in_use = redis.call('ZCARD', KEYS[1])
local limit = math.min(num('limit', in_use), in_use)
redis.call('HSET', KEYS[5], 'limit', limit, 'last_change', now,
           'confirmed', math.min(num('confirmed', 0), in_use))
redis.call('HINCRBY', KEYS[5], 'rejections', 1)
if num('probe_open', 0) == 1 then
  redis.call('HSET', KEYS[5], 'probe_open', 0, 'backoff', math.min(2, num('backoff', 1) * 2))
end
return {epoch, limit, in_use}
"""
)

_RATE_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local h = redis.call('HMGET', KEYS[1], 'rate', 'burst', 'tokens', 'ts')
local rate, burst = tonumber(h[1] or ARGV[1]), tonumber(h[2] or ARGV[2])
local tokens, ts = tonumber(h[3] or burst), tonumber(h[4] or now)
-- Refill at the rate in force since the last call (rate 0 means no limit).
if rate > 0 then tokens = math.min(burst, tokens + (now - ts) / 1000 * rate) end
redis.call('PEXPIRE', KEYS[1], 86400000)
"""

#: KEYS 1: bucket. ARGV: default rate, default burst, cost, max_ahead_ms. Reserves `cost`
#: tokens if the debt that leaves can be paid within max_ahead (→ {1, wait_ms}); otherwise
#: reserves nothing (→ {0, wait_ms}: ask again then), so a rate cut reaches waiters at once.
RATE_TAKE = (
    _RATE_PRELUDE
    + """
local cost, ahead = tonumber(ARGV[3]), tonumber(ARGV[4])
if rate <= 0 then return {1, 0} end
local floor = -rate * ahead / 1000
local ok, wait = 0, 0
if tokens - cost >= floor then
  tokens = tokens - cost
  ok = 1
  if tokens < 0 then wait = -tokens / rate * 1000 end
else
  wait = (cost - tokens + floor) / rate * 1000
end
redis.call('HSET', KEYS[1], 'rate', rate, 'burst', burst, 'tokens', tokens, 'ts', now)
return {ok, math.ceil(wait)}
"""
)

_RATE_STATE = """
local h2 = redis.call('HMGET', KEYS[1], 'max_rate', 'cut_at')
local since = -1
if h2[2] then since = now - tonumber(h2[2]) end
return {tostring(rate), tostring(burst), tostring(h2[1] or rate), since}
"""

#: ARGV: default rate, default burst, new rate ('' = keep), new burst ('' = keep). The new
#: rate applies from now (tokens were refilled at the old one). Returns the state:
#: {rate, burst, rate before the last cut, ms since the last cut (-1: never)}.
RATE_SET = (
    _RATE_PRELUDE
    + """
if ARGV[3] ~= '' then rate = tonumber(ARGV[3]) end
if ARGV[4] ~= '' then burst = tonumber(ARGV[4]); tokens = math.min(tokens, burst) end
redis.call('HSET', KEYS[1], 'rate', rate, 'burst', burst, 'tokens', tokens, 'ts', now)
"""
    + _RATE_STATE
)

#: ARGV: default rate, default burst, beta, cooldown_ms, measured rate ('' = unknown). Throttled:
#: rate := min(rate, measured) × beta, remembered with the rate before the cut (the cubic
#: curve's W_max) and the time; several processes seeing the same throttling cut only once
#: per cooldown. Returns the state as RATE_SET.
RATE_CUT = (
    _RATE_PRELUDE
    + """
local last = redis.call('HGET', KEYS[1], 'cut_at')
if not last or now - tonumber(last) >= tonumber(ARGV[4]) then
  local base = rate
  if ARGV[5] ~= '' and (base <= 0 or tonumber(ARGV[5]) < base) then base = tonumber(ARGV[5]) end
  if base > 0 then
    rate = base * tonumber(ARGV[3])
    redis.call('HSET', KEYS[1], 'max_rate', base, 'cut_at', now)
  end
end
redis.call('HSET', KEYS[1], 'rate', rate, 'burst', burst, 'tokens', tokens, 'ts', now)
"""
    + _RATE_STATE
)

#: KEYS 1: leader. ARGV: our id, ttl_ms. Extends the lease if it is ours, takes it if free
#: (SET NX PX), else 0: a leader back from a short outage keeps its place.
LEADER_CLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""

#: KEYS 1: leader. ARGV: our id. Hands leadership over at once (only if still ours).
LEADER_RESIGN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

#: KEYS 1: leader, 2..: one key per task. ARGV: our id, state ttl_ms, channel, notice, then
#: one state per task key. Fenced: a deposed leader (paused past its lease) writes nothing.
PUBLISH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
for i = 2, #KEYS do redis.call('SET', KEYS[i], ARGV[i + 3], 'PX', ARGV[2]) end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"""

#: KEYS 1: watch set. ARGV: ttl_ms, n_remove, ids to remove, then ids to (re)add. Returns the
#: live watched ids (expired ones, from processes that died, dropped).
WATCH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl, n = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 3, 2 + n do redis.call('ZREM', KEYS[1], ARGV[i]) end
for i = 3 + n, #ARGV do redis.call('ZADD', KEYS[1], now + ttl, ARGV[i]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], math.max(ttl * 8, 60000))
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""
