-- settle.lua: turn a reservation into the actual charge and record the usage event, atomically.
--
-- KEYS[1] token hash, KEYS[2] user hash, KEYS[3] day counter, KEYS[4] month counter
--         (the same period keys the reservation used), KEYS[5] the shard's usage stream,
-- KEYS[6] the shard's orphans hash (events settled while a ledger hash was missing)
-- KEYS[7] the shard's open reservations zset
-- KEYS[8] the shard's reaped zset (request ids whose reservation the reaper refunded)
-- ARGV[1] reserved amount, ARGV[2] actual amount (0 = full refund)
-- ARGV[3] flags: 1 = append the usage event to the stream (else refund only, no event)
-- ARGV[4] orphan field of the token ("t<id>"), ARGV[5] orphan field of the user ("u<id>")
-- ARGV[6] the reservation's zset member (as reserve.lua wrote it)
-- ARGV[7] the request id (the member's first field)
-- ARGV[8] the usage event, one JSON object (relaygate.events); the entry gets `quota` (what
--         was charged) and `event`
--
-- Exactly once, decided here rather than by the caller: the settle that removes the member
-- applies it. If the member is gone, either a settle already ran (a retry or a replay after
-- a lost reply: do nothing) or the reaper refunded it (its request id is in the reaped zset:
-- charge the whole actual amount from zero, and drop the marker so a second replay is a
-- no-op). A reaped request's charge is not capped: its reservation covered the answer when it
-- was admitted, and the refund was the mistake.
--
-- An answer that costs more than was reserved (an upstream ignoring its output bound) is
-- charged the excess only as far as every limit has room: `used` never passes `limit`.
-- Returns {charged, capped (0/1), reserved as found (0 when reaped, -1 already applied)}.

local reserved = tonumber(ARGV[1])
local flags = tonumber(ARGV[3])
local log_event = flags % 2 == 1
local reaped = false
if redis.call('ZREM', KEYS[7], ARGV[6]) == 0 then
  if redis.call('ZREM', KEYS[8], ARGV[7]) == 0 then return {0, 0, -1} end
  reserved = 0
  reaped = true
end
local actual = tonumber(ARGV[2])
local delta = actual - reserved
local capped = 0
local tok_live = redis.call('EXISTS', KEYS[1]) == 1
local user_live = redis.call('EXISTS', KEYS[2]) == 1

if delta > 0 and not reaped then
  local room = delta
  if tok_live then
    local t = redis.call('HMGET', KEYS[1], 'limit', 'used', 'unlimited', 'dlimit', 'mlimit')
    if tonumber(t[3]) ~= 1 then
      local r = tonumber(t[1]) - tonumber(t[2])
      if r < room then room = r end
    end
    local dlimit = tonumber(t[4]) or 0
    if dlimit > 0 then
      local r = dlimit - (tonumber(redis.call('GET', KEYS[3])) or 0)
      if r < room then room = r end
    end
    local mlimit = tonumber(t[5]) or 0
    if mlimit > 0 then
      local r = mlimit - (tonumber(redis.call('GET', KEYS[4])) or 0)
      if r < room then room = r end
    end
  end
  if user_live then
    local u = redis.call('HMGET', KEYS[2], 'limit', 'used')
    local r = tonumber(u[1]) - tonumber(u[2])
    if r < room then room = r end
  end
  if room < 0 then room = 0 end
  if room < delta then delta = room; capped = 1 end
end
local charged = reserved + delta

if delta ~= 0 then
  if tok_live then redis.call('HINCRBY', KEYS[1], 'used', delta) end
  if user_live then redis.call('HINCRBY', KEYS[2], 'used', delta) end
  if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('INCRBY', KEYS[3], delta) end
  if redis.call('EXISTS', KEYS[4]) == 1 then redis.call('INCRBY', KEYS[4], delta) end
end

if log_event then
  redis.call('XADD', KEYS[5], '*', 'quota', charged, 'event', ARGV[8])
  if not tok_live then redis.call('HINCRBY', KEYS[6], ARGV[4], 1) end
  if not user_live then redis.call('HINCRBY', KEYS[6], ARGV[5], 1) end
end
return {charged, capped, reserved}
