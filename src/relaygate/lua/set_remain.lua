-- set_remain.lua: "remain := X" as the ledger understands it, atomically.
--
-- KEYS[1] a token or user ledger hash
-- ARGV[1] the remain to grant (integer quota units, >= 0)
--
-- Sets limit := used + X in one step, so spend landing at the same moment is neither lost
-- nor granted back. `used` is never written. Returns the new limit, or -1 if the hash is
-- missing (the caller rebuilds it from PostgreSQL and calls again).

local used = redis.call('HGET', KEYS[1], 'used')
if not used then return -1 end
local limit = tonumber(used) + tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'limit', limit)
return limit
