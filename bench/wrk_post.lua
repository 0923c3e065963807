-- wrk script: POST a JSON body, rotating over several API keys, and print one JSON line.
--
-- Env: WRK_BODY (the request body), WRK_KEYS (comma-separated keys, sent as
-- "Authorization: Bearer <key>"), WRK_HEADERS (extra "Name: value" lines, newline-separated:
-- a peer gateway's routing headers), WRK_OVERHEAD=1 to also collect the
-- x-relaygate-overhead-ms response header (costs a response() callback: use at low load).
--
-- Requests are pre-formatted once per thread in init(), so request() is a table lookup.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

local reqs = {}
local n = 0
local i = 0
ovh = {}
local collect = os.getenv("WRK_OVERHEAD") == "1"

function init(args)
  local body = os.getenv("WRK_BODY") or "{}"
  local keys = os.getenv("WRK_KEYS") or ""
  local extra = {}
  for line in string.gmatch(os.getenv("WRK_HEADERS") or "", "[^\n]+") do
    local name, value = string.match(line, "^%s*([^:]+):%s*(.-)%s*$")
    if name then extra[name] = value end
  end
  local function headers(key)
    local h = {["Content-Type"] = "application/json"}
    if key then h["Authorization"] = "Bearer " .. key end
    for name, value in pairs(extra) do h[name] = value end
    return h
  end
  for key in string.gmatch(keys, "[^,]+") do
    n = n + 1
    reqs[n] = wrk.format("POST", nil, headers(key), body)
  end
  if n == 0 then
    n = 1
    reqs[1] = wrk.format("POST", nil, headers(nil), body)
  end
  i = math.random(n) - 1
end

function request()
  i = i % n + 1
  return reqs[i]
end

if collect then
  function response(status, headers, body)
    local v = headers["x-relaygate-overhead-ms"] or headers["X-Relaygate-Overhead-Ms"]
    if v then
      ovh[#ovh + 1] = tonumber(v)
    end
  end
end

local function pct(sorted, p)
  if #sorted == 0 then return nil end
  local idx = math.ceil(#sorted * p / 100)
  if idx < 1 then idx = 1 end
  return sorted[idx]
end

function done(summary, latency, requests)
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.timeout + e.status
  local all = {}
  for _, t in ipairs(threads) do
    local o = t:get("ovh")
    if o then
      for _, v in ipairs(o) do all[#all + 1] = v end
    end
  end
  table.sort(all)
  local parts = {
    string.format('"requests":%d', summary.requests),
    string.format('"duration_us":%d', summary.duration),
    string.format('"errors":%d', errors),
    string.format('"status_errors":%d', e.status),
    string.format('"p50_us":%d', latency:percentile(50)),
    string.format('"p90_us":%d', latency:percentile(90)),
    string.format('"p99_us":%d', latency:percentile(99)),
    string.format('"mean_us":%f', latency.mean),
  }
  if #all > 0 then
    parts[#parts + 1] = string.format('"ovh_p50":%f', pct(all, 50))
    parts[#parts + 1] = string.format('"ovh_p99":%f', pct(all, 99))
  end
  io.write("WRKJSON {" .. table.concat(parts, ",") .. "}\n")
end
