-- Shared by the gateway's limiter scripts (prepended to each). Token buckets are hashes
-- {available, updated}: `available` may go negative (debt), `updated` is Redis's own clock in
-- milliseconds, so every gateway replica agrees on time whatever its own clock says.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

-- The bucket at `key` refilled to now; nil when the limit is absent (negative).
local function load_bucket(key, limit)
  if limit < 0 then return nil end
  local fields = redis.call('HMGET', key, 'available', 'updated')
  local available, updated = tonumber(fields[1]), tonumber(fields[2])
  if available == nil or updated == nil then return limit end
  local elapsed = math.max(0, now - updated)
  return math.min(limit, available + elapsed * limit / 60000)
end

-- Milliseconds until the bucket is full again.
local function until_full_ms(available, limit)
  if available == nil or limit <= 0 then return 0 end
  return math.ceil(math.max(0, limit - available) * 60000 / limit)
end

-- Stores a bucket; it expires once it would be full anyway (an absent bucket reads as full).
local function store_bucket(key, available, limit)
  redis.call('HSET', key, 'available', tostring(available), 'updated', string.format('%d', now))
  redis.call('PEXPIRE', key, until_full_ms(available, limit) + 1000)
end
