--[[
  A job's state, read atomically (Bull's getState reads it in several round trips).

  KEYS[1] job hash
  ARGV[1] base key "P:Q:"   ARGV[2] job id
  Returns: completed, failed, delayed, active, waiting, paused, stuck, or missing (no hash).
]]
local rcall = redis.call
local base = ARGV[1]
local id = ARGV[2]
if rcall("EXISTS", KEYS[1]) == 0 then
  return "missing"
end
if rcall("ZSCORE", base .. "completed", id) then return "completed" end
if rcall("ZSCORE", base .. "failed", id) then return "failed" end
if rcall("ZSCORE", base .. "delayed", id) then return "delayed" end
if rcall("LPOS", base .. "active", id) then return "active" end
if rcall("LPOS", base .. "wait", id) then return "waiting" end
if rcall("LPOS", base .. "paused", id) then return "paused" end
return "stuck"
