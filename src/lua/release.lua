-- release: compare-and-delete.
-- KEYS[1]  the lock key
-- ARGV[1]  the value the holder stored (its token, plus ".<fence>" when
--          fenced); with ARGV[2] = "prefix", the start of that value (a
--          fenced lease whose fence the holder never learnt: "<token>.")
-- returns  1 when the key held ARGV[1] and is now deleted;
--          0 when there is no such key (expired, released, never set);
--          -1 when it holds another value (someone else's: untouched)
local held = redis.call('GET', KEYS[1])
if not held then
    return 0
end
if held == ARGV[1] or (ARGV[2] == 'prefix' and string.sub(held, 1, #ARGV[1]) == ARGV[1]) then
    return redis.call('DEL', KEYS[1])
end
return -1
