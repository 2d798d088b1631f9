--[[
  Appends a log line to a job (Bull 4 addLog-2.lua).

  KEYS[1] job hash
  ARGV[1] job's log key   ARGV[2] line
  Returns the new number of lines, or -1 when the job does not exist.
]]
if redis.call("EXISTS", KEYS[1]) == 0 then
  return -1
end
return redis.call("RPUSH", ARGV[1], ARGV[2])
