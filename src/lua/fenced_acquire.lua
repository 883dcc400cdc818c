-- fenced_acquire: take the lock and issue a fencing token, in one step.
-- KEYS[1]  the lock key
-- KEYS[2]  the fencing counter of the lock key's slot (same slot)
-- ARGV[1]  the holder's token (32 hex digits)
-- ARGV[2]  the time to live, in milliseconds
-- returns  {1, fence} when acquired: the lock's value is "<token>.<fence>";
--          {1, fence} too when the lock already holds this token (a retry
--          of an acquire whose reply was lost: same fence as before; the
--          TTL is set again, so it counts from this call);
--          {0, value} when someone else holds it.
-- The fence is max(counter + 1, server time in microseconds): it increases
-- for every acquisition in the slot, and stays above any fence issued
-- before a failover that lost recent writes as long as the clocks of the
-- old and the new primary differ by less than the failover took.
local held = redis.call('GET', KEYS[1])
if held then
    local dot = string.find(held, '.', 1, true)
    if dot and string.sub(held, 1, dot - 1) == ARGV[1] then
        redis.call('PEXPIRE', KEYS[1], ARGV[2])
        return {1, string.sub(held, dot + 1)}
    end
    return {0, held}
end
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
local counter = tonumber(redis.call('GET', KEYS[2]) or '0')
local fence = math.max(counter + 1, now_us)
local text = string.format('%.0f', fence)
redis.call('SET', KEYS[2], text)
redis.call('SET', KEYS[1], ARGV[1] .. '.' .. text, 'PX', ARGV[2])
return {1, text}
