--[[
  Records a failed attempt and then retries now, retries later, or fails the job for good
  (Bull 4 saveStacktrace-1 + retryJob-7 / moveToDelayed-4 / moveToFinished-9, in one script).
  The lock is checked before anything is written: a worker that lost its lock changes nothing.

  KEYS[1] active   KEYS[2] failed   KEYS[3] wait   KEYS[4] paused   KEYS[5] meta-paused
  KEYS[6] priority   KEYS[7] delayed
  ARGV[1] base key   ARGV[2] job id   ARGV[3] the job's lock value   ARGV[4] now ms
  ARGV[5] failedReason
  ARGV[6] stacktrace JSON array   ARGV[7] attemptsMade   ARGV[8] "retry", "delay" or "fail"
  ARGV[9] due ms (delay)   ARGV[10] keep age seconds ("" = none)   ARGV[11] keep count
  ARGV[12] failed event JSON   ARGV[13] keep slice: most old failed jobs the keep policy deletes
  Returns -1 no job, -2 lock missing, -6 lock held by another worker, -3 not active, 0 done.
]]
local rcall = redis.call
local base = ARGV[1]
local id = ARGV[2]
local jobKey = base .. id

if rcall("EXISTS", jobKey) == 0 then return -1 end
local released = releaseActive(KEYS[1], jobKey, id, ARGV[3])
if released < 0 then return released end
rcall("SREM", base .. "stalled", id)
rcall("HMSET", jobKey, "stacktrace", ARGV[6], "failedReason", ARGV[5], "attemptsMade", ARGV[7])

local mode = ARGV[8]
if mode == "delay" then
  local due = tonumber(ARGV[9])
  local score = due * 4096 + (tonumber(string.match(id, "^%d+$") or "0") % 4096)
  rcall("ZADD", KEYS[7], score, id)
  rcall("PUBLISH", KEYS[7], due)
  return 0
end

if mode == "retry" then
  local ok, opts = pcall(cjson.decode, rcall("HGET", jobKey, "opts") or "{}")
  local lifo = ok and type(opts) == "table" and opts["lifo"] == true
  pushWaiting(base, waitingList(base), id, tonumber(rcall("HGET", jobKey, "priority")) or 0, lifo)
  return 0
end

releaseDebounce(base, jobKey)
storeFinished(base, KEYS[2], id, tonumber(ARGV[4]), tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[13]))
rcall("PUBLISH", KEYS[2], ARGV[12])
return 0
