--[[
  Takes a job for processing (behaviour of Bull 4 moveToActive-8.lua, without bounceBack).

  KEYS[1] wait   KEYS[2] active   KEYS[3] priority   KEYS[4] stalled   KEYS[5] limiter   KEYS[6] delayed
  ARGV[1] base key "P:Q:"   ARGV[2] lock value (unique per activation)   ARGV[3] lock duration ms
  ARGV[4] now ms
  ARGV[5] job id already moved to active by a blocking pop ("" = pop one here)
  ARGV[6] limiter max jobs ("" = no limiter)   ARGV[7] limiter duration ms   ARGV[8] "1" = limit per group
  ARGV[9] worker token (for active@token)   ARGV[10] "1" = publish drained when nothing is waiting
  Returns one of:
    {"none"}                       nothing waiting (publishes drained)
    {"job", id, {field, value...}} locked and active
    {"orphan", id}                 an id without a hash was dropped from active
    {"limited", id}                the rate limiter moved the job to delayed
]]
local rcall = redis.call
local base = ARGV[1]
local id = ARGV[5]

if id ~= "" then
  rcall("SREM", KEYS[4], id)
else
  id = rcall("RPOPLPUSH", KEYS[1], KEYS[2])
  if not id then
    if ARGV[10] == "1" then
      rcall("PUBLISH", base .. "drained", "")
    end
    return {"none"}
  end
end

local fields = readJob(base, KEYS[2], id)
if #fields == 0 then
  return {"orphan", id}
end

local maxJobs = tonumber(ARGV[6])
if maxJobs then
  local duration = tonumber(ARGV[7])
  local limiterKey = KEYS[5]
  if ARGV[8] == "1" then
    local group = string.match(id, "[^:]+$")
    if group then
      limiterKey = limiterKey .. ":" .. group
    end
  end
  local limitedKey = limiterKey .. ":limited"
  local indexKey = KEYS[5] .. ":index"
  local delay = 0
  if rcall("SISMEMBER", limitedKey, id) == 1 then
    rcall("SREM", limitedKey, id)
    rcall("HDEL", indexKey, id)
  else
    local limited = rcall("SCARD", limitedKey)
    if limited > 0 then
      delay = (limited * duration * 1.1) / maxJobs + math.max(rcall("PTTL", limiterKey), 0)
    end
  end
  local counter = tonumber(rcall("GET", limiterKey)) or 0
  if delay == 0 and counter >= maxJobs then
    delay = math.max(rcall("PTTL", limiterKey), 0) + ((counter - maxJobs) * duration) / maxJobs
  end
  if delay > 0 then
    local due = math.floor(tonumber(ARGV[4]) + delay)
    rcall("ZADD", KEYS[6], due * 4096 + (counter % 4096), id)
    rcall("PUBLISH", KEYS[6], due)
    rcall("SADD", limitedKey, id)
    rcall("HSET", indexKey, id, limitedKey)
    rcall("LREM", KEYS[2], 1, id)
    return {"limited", id}
  end
  if counter == 0 then
    rcall("PSETEX", limiterKey, duration, 1)
  else
    rcall("INCR", limiterKey)
  end
end

return activate(base, KEYS[2], id, fields, ARGV[2], ARGV[3], ARGV[4], ARGV[9])
