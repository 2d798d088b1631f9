--[[
  Renews the locks of this worker's active jobs (Bull 4 extendLock-2.lua, for many jobs at once).
  Each activation has its own lock value, so a stale attempt of a job that was taken again, by
  this worker or another, cannot renew the new attempt's lock.

  KEYS[1] stalled
  ARGV[1] base key   ARGV[2] lock duration ms   ARGV[3..] pairs of job id and lock value
  Returns the ids whose lock is gone or held by someone else: those results must be discarded.
]]
local rcall = redis.call
local lost = {}
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  local lockKey = ARGV[1] .. id .. ":lock"
  if rcall("GET", lockKey) == ARGV[i + 1] then
    rcall("SET", lockKey, ARGV[i + 1], "PX", ARGV[2])
    rcall("SREM", KEYS[1], id)
  else
    lost[#lost + 1] = id
  end
end
return lost
