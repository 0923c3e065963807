-- dead_letter.lua: move one usage event the flusher cannot record to the dead-letter stream.
--
-- KEYS[1] the shard's usage stream, KEYS[2] its dead-letter stream
-- ARGV[1] the consumer group, ARGV[2] the entry id, ARGV[3] the reason
--
-- Copy, XACK and XDEL happen atomically, and only while the entry is still in the stream:
-- a repeated call (a retried round, a lost reply) finds it gone and appends nothing, so an
-- entry is dead-lettered exactly once.
-- Returns 1 moved, 0 already gone.

local found = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if #found == 0 then return 0 end
local args = found[1][2]
table.insert(args, 'dead_reason')
table.insert(args, ARGV[3])
table.insert(args, 'dead_id')
table.insert(args, ARGV[2])
redis.call('XADD', KEYS[2], '*', unpack(args))
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
