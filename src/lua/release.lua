-- release: compare-and-delete.
-- KEYS[1]  the lock key
-- ARGV[1]  the value the holder stored (its token, plus ".<fence>" when fenced)
-- returns  1 when the key held ARGV[1] and is now deleted, 0 otherwise
--          (already expired, released, or held by someone else: untouched)
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
