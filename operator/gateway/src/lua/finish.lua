-- Ends a request: frees its concurrency lease and corrects its token reservation to the real
-- usage (a refund, or a charge beyond it that leaves the bucket in debt), in one atomic step.
-- KEYS: 1 tokens bucket, 2 leases, 3 month counter (of the period the request was admitted in).
-- ARGV: 1 tokens/min (-1 = none), 2 tokens reserved, 3 tokens used (-1 = unknown: keep the
--       whole reservation), 4 lease id.
redis.call('ZREM', KEYS[2], ARGV[4])
local used = tonumber(ARGV[3])
if used < 0 then return 0 end
local delta = tonumber(ARGV[2]) - used
local tpm = tonumber(ARGV[1])
local budget = load_bucket(KEYS[1], tpm)
if budget ~= nil then
  if delta > 0 then budget = math.min(tpm, budget + delta) else budget = budget + delta end
  store_bucket(KEYS[1], budget, tpm)
end
local month = tonumber(redis.call('GET', KEYS[3]) or '')
if month ~= nil then
  redis.call('SET', KEYS[3], string.format('%d', math.max(0, month - delta)), 'KEEPTTL')
end
return 1
