-- reserve.lua: check a token and its user, then reserve quota, all or nothing.
--
-- KEYS[1] token hash   rg:{s}:tok:<id>     (limit, used, unlimited, status, expires, ver, dlimit, mlimit)
-- KEYS[2] user hash    rg:{s}:user:<id>    (limit, used, status)
-- KEYS[3] day counter  rg:{s}:tok:<id>:d:<YYYYMMDD>
-- KEYS[4] month counter rg:{s}:tok:<id>:m:<YYYYMM>
-- KEYS[5] open reservations rg:{s}:resv (zset: member
--         "<rid>|<tok>|<user>|<day>|<month>|<instance>|<amount>",
--         score = deadline); settle removes the member, the reaper refunds what is left
-- KEYS[6] optional: the shard's refusals hash rg:{s}:refused (field = refusal code, a count;
--         read by `relaygate top`); written only when a request is refused
-- ARGV[1] cached metadata version (0 = do not compare)
-- ARGV[2] now, unix seconds
-- ARGV[3] base: integer quota units charged whatever the output (prompt estimate or per-call price)
-- ARGV[4] per_token_micro: quota units per completion token, times 1e6 (integer; 0 = per-call price)
-- ARGV[5] full: completion tokens the answer may reach (the client's bound, or the model's
--         maximum output when it gives none, times n); the whole of it is reserved, so that
--         concurrent requests can never together be delivered more than the room
-- ARGV[6] clamp: 1 = when the room cannot cover `full`, reserve all that is affordable and
--         return that many tokens: the caller sends them upstream as the output bound;
--         0 = refuse
-- ARGV[7] day counter TTL, ARGV[8] month counter TTL (seconds)
-- ARGV[9] reservation member prefix "<rid>|<tok>|<user>|<day>|<month>|<instance>",
-- ARGV[10] its deadline
--
-- Returns {code, ver, amount, clamp_tokens}; a quota refusal (30-33) adds a fifth element,
-- the room that was left (for the error message). Codes (relaygate.ledger.Code):
--   0 ok; 1 token hash missing; 2 user hash missing; 3 stale metadata (ver differs);
--   10 token disabled; 11 token expired; 12 token exhausted; 13 token deleted; 20 user disabled;
--   30 token quota; 31 user quota; 32 daily quota; 33 monthly quota.
-- Amounts are integer quota units (500000 = $1).

-- A refusal (code >= 10) is counted per reason for operators; the admitted path pays nothing.
local function refuse(code, ver, room)
  if KEYS[6] then redis.call('HINCRBY', KEYS[6], code, 1) end
  if room then return {code, ver, 0, 0, room} end
  return {code, ver, 0, 0}
end

local t = redis.call('HMGET', KEYS[1], 'limit', 'used', 'unlimited', 'status', 'expires', 'ver', 'dlimit', 'mlimit')
if not t[4] then return {1, 0, 0, 0} end
local status = tonumber(t[4])
local ver = tonumber(t[6]) or 0
if status == 9 then return refuse(13, ver) end
if status == 2 then return refuse(10, ver) end
if status == 3 then return refuse(11, ver) end
if status == 4 then return refuse(12, ver) end
if status ~= 1 then return refuse(10, ver) end
local expires = tonumber(t[5]) or -1
if expires ~= -1 and expires < tonumber(ARGV[2]) then return refuse(11, ver) end
local cached = tonumber(ARGV[1])
if cached ~= 0 and cached ~= ver then return {3, ver, 0, 0} end

local u = redis.call('HMGET', KEYS[2], 'limit', 'used', 'status')
if not u[3] then return {2, ver, 0, 0} end
if tonumber(u[3]) ~= 1 then return refuse(20, ver) end

-- room: the smallest of what the token, the user and the period quotas have left
local room = tonumber(u[1]) - tonumber(u[2])
local reason = 31
if tonumber(t[3]) ~= 1 then
  local troom = tonumber(t[1]) - tonumber(t[2])
  if troom < room then room = troom; reason = 30 end
end
local dlimit = tonumber(t[7]) or 0
if dlimit > 0 then
  local droom = dlimit - (tonumber(redis.call('GET', KEYS[3])) or 0)
  if droom < room then room = droom; reason = 32 end
end
local mlimit = tonumber(t[8]) or 0
if mlimit > 0 then
  local mroom = mlimit - (tonumber(redis.call('GET', KEYS[4])) or 0)
  if mroom < room then room = mroom; reason = 33 end
end

local base = tonumber(ARGV[3])
local ptm = tonumber(ARGV[4])
local full = tonumber(ARGV[5])
local function cost(tokens)
  return base + math.floor((tokens * ptm + 999999) / 1000000)
end

local amount
local clamp_tokens = 0
if ptm == 0 then
  if room < base then return refuse(reason, ver, room) end
  amount = base
elseif room >= cost(full) then
  amount = cost(full)
elseif tonumber(ARGV[6]) == 1 then
  local affordable = math.floor((room - base) * 1000000 / ptm)
  if affordable < 1 then return refuse(reason, ver, room) end
  if affordable > full then affordable = full end
  -- doubles: (room - base) * 1e6 may round up past the room; step back until it fits
  while affordable > 0 and cost(affordable) > room do affordable = affordable - 1 end
  if affordable < 1 then return refuse(reason, ver, room) end
  clamp_tokens = affordable
  amount = cost(affordable)
else
  return refuse(reason, ver, room)
end

if amount > 0 then
  redis.call('HINCRBY', KEYS[1], 'used', amount)
  redis.call('HINCRBY', KEYS[2], 'used', amount)
end
-- A period counter gets its TTL when this reservation creates it (the new value is then
-- exactly `amount`); it only ever needs to outlive its period, so no EXPIRE per request.
if redis.call('INCRBY', KEYS[3], amount) == amount then
  redis.call('EXPIRE', KEYS[3], tonumber(ARGV[7]))
end
if redis.call('INCRBY', KEYS[4], amount) == amount then
  redis.call('EXPIRE', KEYS[4], tonumber(ARGV[8]))
end
-- `n`: admitted requests of the token (requests/s in `relaygate top`); restarts at 0 when
-- the hash is rebuilt, which a rate read as a difference tolerates.
redis.call('HINCRBY', KEYS[1], 'n', 1)
redis.call('ZADD', KEYS[5], tonumber(ARGV[10]), ARGV[9] .. '|' .. amount)
return {0, ver, amount, clamp_tokens}
