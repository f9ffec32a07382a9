-- Admits one request or refuses it without taking anything: concurrency lease, requests
-- bucket, tokens bucket and monthly counter are checked and taken in one atomic step.
-- KEYS: 1 requests bucket, 2 tokens bucket, 3 leases (sorted set: lease id -> expiry ms),
--       4 month counter.
-- ARGV: 1 requests/min, 2 tokens/min, 3 concurrency cap, 4 monthly quota (each -1 = none),
--       5 tokens to reserve, 6 tokens already counted this month by billing,
--       7 month counter TTL (s), 8 lease id, 9 lease TTL (ms).
-- Returns {status, retry_after_ms, requests_remaining, requests_reset_ms, tokens_remaining,
--          tokens_reset_ms}; status 0 admitted, 1 concurrency, 2 requests, 3 tokens, 4 quota.
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local cap, quota, tokens = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local lease_ttl = tonumber(ARGV[9])
local requests = load_bucket(KEYS[1], rpm)
local budget = load_bucket(KEYS[2], tpm)

local function remaining(available)
  if available == nil then return -1 end
  return math.floor(math.max(0, available))
end
local function reply(status, retry_ms)
  return {status, retry_ms, remaining(requests), until_full_ms(requests, rpm),
          remaining(budget), until_full_ms(budget, tpm)}
end
-- Milliseconds until `amount` is available; more than a full bucket needs only a full bucket.
local function wait_ms(available, limit, amount)
  if available == nil then return 0 end
  local needed = math.min(amount, limit)
  if available >= needed then return 0 end
  if limit == 0 then return 86400000 end
  return math.ceil((needed - available) * 60000 / limit)
end

-- Leases whose gateway stopped renewing them (it died) free their slot here.
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
if cap >= 0 and redis.call('ZCARD', KEYS[3]) >= cap then
  return reply(1, 1000)
end
local request_wait = wait_ms(requests, rpm, 1)
local token_wait = wait_ms(budget, tpm, tokens)
if request_wait > 0 then return reply(2, math.max(request_wait, token_wait)) end
if token_wait > 0 then return reply(3, token_wait) end
local used = math.max(tonumber(redis.call('GET', KEYS[4]) or '0'), tonumber(ARGV[6]))
if quota >= 0 and used + tokens > quota then
  return reply(4, 0)
end

if requests ~= nil then
  requests = requests - 1
  store_bucket(KEYS[1], requests, rpm)
end
if budget ~= nil then
  budget = budget - tokens
  store_bucket(KEYS[2], budget, tpm)
end
redis.call('SET', KEYS[4], string.format('%d', used + tokens), 'EX', ARGV[7])
redis.call('ZADD', KEYS[3], now + lease_ttl, ARGV[8])
redis.call('PEXPIRE', KEYS[3], lease_ttl * 2)
return reply(0, 0)
