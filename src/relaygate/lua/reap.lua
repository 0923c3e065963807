-- reap.lua: refund one reservation whose request never settled (its relay died).
--
-- KEYS[1] token hash, KEYS[2] user hash, KEYS[3] day counter, KEYS[4] month counter,
-- KEYS[5] the shard's open reservations zset, KEYS[6] the shard's reaped zset
-- ARGV[1] the reservation member, ARGV[2] its amount, ARGV[3] its request id,
-- ARGV[4] now (unix seconds)
--
-- Removing the member decides the race with a late settle: whichever of the two removes it
-- applies the reservation (settle charges, reap refunds); the other sees it gone. A refund
-- leaves the request id in the reaped zset, so that a settle arriving later charges from
-- zero (marker present) rather than taking its reservation for already applied.
-- Returns 1 refunded, 0 already settled or reaped.

if redis.call('ZREM', KEYS[5], ARGV[1]) == 0 then return 0 end
local amount = tonumber(ARGV[2])
if amount ~= 0 then
  if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HINCRBY', KEYS[1], 'used', -amount) end
  if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('HINCRBY', KEYS[2], 'used', -amount) end
  if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('INCRBY', KEYS[3], -amount) end
  if redis.call('EXISTS', KEYS[4]) == 1 then redis.call('INCRBY', KEYS[4], -amount) end
end
redis.call('ZADD', KEYS[6], ARGV[4], ARGV[3])
return 1
