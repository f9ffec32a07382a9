-- Extends a running request's concurrency lease (only while it still exists).
-- KEYS: 1 leases. ARGV: 1 lease id, 2 lease TTL (ms).
local ttl = tonumber(ARGV[2])
local renewed = redis.call('ZADD', KEYS[1], 'XX', 'CH', now + ttl, ARGV[1])
if renewed > 0 then redis.call('PEXPIRE', KEYS[1], ttl * 2) end
return renewed
