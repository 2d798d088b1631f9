--[[
  Completes an active job and, when asked, takes the next one (Bull 4 moveToFinished-9.lua, completed).
  The lock is checked before anything is written: a worker that lost its lock changes nothing.

  KEYS[1] active   KEYS[2] completed   KEYS[3] wait   KEYS[4] priority   KEYS[5] stalled
  ARGV[1] base key   ARGV[2] job id   ARGV[3] the job's lock value   ARGV[4] now ms
  ARGV[5] returnvalue JSON
  ARGV[6] keep age seconds ("" = none)   ARGV[7] keep count (-1 all, 0 none, N newest)
  ARGV[8] completed event JSON   ARGV[9] "1" = fetch the next job   ARGV[10] lock duration ms
  ARGV[11] "1" when the job has a debounce id   ARGV[12] lock value for the next job
  ARGV[13] worker token (for active@token)   ARGV[14] keep slice: most old completed jobs the keep policy deletes
  Returns -2 lock missing (an expired lock, or a job deleted meanwhile), -6 lock held by another
  worker, -3 not active, 0 done, or {"job", id, {field, value...}} done and the next job taken.
  The `stalled` set is left alone: the stalled check ignores ids that are no longer active.
]]
local rcall = redis.call
local base = ARGV[1]
local id = ARGV[2]
local jobKey = base .. id

local released = releaseActive(KEYS[1], jobKey, id, ARGV[3])
if released < 0 then return released end
if ARGV[11] == "1" then releaseDebounce(base, jobKey) end
storeFinished(base, KEYS[2], id, tonumber(ARGV[4]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[14]),
  "returnvalue", ARGV[5])
rcall("PUBLISH", KEYS[2], ARGV[8])

if ARGV[9] == "1" then
  local nextId = rcall("RPOPLPUSH", KEYS[3], KEYS[1])
  if nextId then
    local fields = readJob(base, KEYS[1], nextId)
    if #fields > 0 then
      return activate(base, KEYS[1], nextId, fields, ARGV[12], ARGV[10], ARGV[4], ARGV[13])
    end
  end
end
return 0
