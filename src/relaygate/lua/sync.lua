-- sync.lua: write PostgreSQL's view of a token or user into its ledger hash.
--
-- KEYS[1] the ledger hash (token or user), KEYS[2] the shard's orphans hash
-- ARGV[1] mode: "init"   create the hash if it is missing (first use, or Redis lost it); the
--                        pairs must include `used` (flushed total + unflushed stream events);
--               "update" a management write: overwrite metadata and `limit`, never `used`;
--                        only when the hash exists and ARGV[2] is newer than its `ver`
-- ARGV[2] ver (metadata version from PostgreSQL)
-- ARGV[3] orphan field ("t<id>" / "u<id>"), ARGV[4] orphan count the caller saw (init only)
-- ARGV[5..] field/value pairs
--
-- Returns 1 written, 0 nothing to do (already there / not newer / missing on update),
-- -1 init raced an orphan event: the caller recounts and retries.

local exists = redis.call('EXISTS', KEYS[1]) == 1
local pairs_ = {}
for i = 5, #ARGV do pairs_[#pairs_ + 1] = ARGV[i] end
if ARGV[1] == 'init' then
  if exists then return 0 end
  local seen = tonumber(redis.call('HGET', KEYS[2], ARGV[3])) or 0
  if seen ~= tonumber(ARGV[4]) then return -1 end
  redis.call('HSET', KEYS[1], 'ver', ARGV[2], unpack(pairs_))
  redis.call('HDEL', KEYS[2], ARGV[3])
  return 1
end
if not exists then return 0 end
local cur = tonumber(redis.call('HGET', KEYS[1], 'ver')) or 0
if tonumber(ARGV[2]) <= cur then return 0 end
redis.call('HSET', KEYS[1], 'ver', ARGV[2], unpack(pairs_))
return 1
