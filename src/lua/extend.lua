-- extend: compare-and-pexpire.
-- KEYS[1]  the lock key
-- ARGV[1]  the value the holder stored
-- ARGV[2]  the new time to live, in milliseconds from now
-- returns  1 when the key held ARGV[1] and its TTL is now ARGV[2] ms,
--          0 otherwise (the lease is gone or taken: untouched)
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
