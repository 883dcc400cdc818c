-- fenced_write: the protected resource's compare-and-set of one write.
-- KEYS[1]  the resource's record of one lock key (a hash: highest, holder,
--          lease of the highest token accepted so far)
-- KEYS[2]  the resource's write counter (one for the whole resource)
-- ARGV[1]  the writer's fencing token (decimal)
-- ARGV[2]  the holder (process and worker)
-- ARGV[3]  the lease id
-- returns  {accepted, highest, seq}: accepted is 1 when the token is not
--          below the highest token accepted for this key (the write is
--          applied and the token becomes the highest), 0 when it is below
--          (nothing changes); highest is the highest token after this
--          write; seq is this write's number in the resource's total order
--          of writes (INCR of KEYS[2], taken for refused writes too).
-- Tokens are compared as numbers: fences are below 2^53 (microseconds of
-- server time), exact in Lua's doubles.
local seq = redis.call('INCR', KEYS[2])
local token = tonumber(ARGV[1])
local highest = tonumber(redis.call('HGET', KEYS[1], 'highest') or '-1')
if token >= highest then
    redis.call('HSET', KEYS[1], 'highest', ARGV[1], 'holder', ARGV[2], 'lease', ARGV[3])
    return {1, ARGV[1], seq}
end
return {0, string.format('%.0f', highest), seq}
