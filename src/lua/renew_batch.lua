-- renew_batch: extend many leases served by this node, in one call.
-- KEYS     none: the keys travel in ARGV, so one call may cover keys of
--          many slots of the node it runs on (undeclared keys; a key this
--          node does not serve fails on its own and is reported, not fatal)
-- ARGV[1]  the new time to live, in milliseconds from now
-- ARGV[2k], ARGV[2k+1]  (k = 1..n) a lock key and the value its holder stored
-- returns  an array of n entries, in order: 1 renewed, 0 gone or taken
--          (untouched), or an error string when the key could not be
--          touched here (not served by this node, slot migrating); the
--          caller renews those one by one through the router.
-- Partial application is safe: each entry is independent.
local ttl = ARGV[1]
local out = {}
for i = 2, #ARGV, 2 do
    local ok, held = pcall(redis.call, 'GET', ARGV[i])
    if not ok then
        out[#out + 1] = tostring(held.err or held)
    elseif held == ARGV[i + 1] then
        local done, res = pcall(redis.call, 'PEXPIRE', ARGV[i], ttl)
        if done then out[#out + 1] = res else out[#out + 1] = tostring(res.err or res) end
    else
        out[#out + 1] = 0
    end
end
return out
