--[[
  Renews the locks of this worker's active jobs (Bull 4 extendLock-2.lua, for many jobs at once).

  KEYS[1] stalled
  ARGV[1] base key   ARGV[2] token   ARGV[3] lock duration ms   ARGV[4..] job ids
  Returns the ids whose lock is gone or held by someone else: those results must be discarded.
]]
local rcall = redis.call
local lost = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local lockKey = ARGV[1] .. id .. ":lock"
  if rcall("GET", lockKey) == ARGV[2] then
    rcall("SET", lockKey, ARGV[2], "PX", ARGV[3])
    rcall("SREM", KEYS[1], id)
  else
    lost[#lost + 1] = id
  end
end
return lost
