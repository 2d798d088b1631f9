-- Include: finishing an active job (lock check, keep policies, debounce slots).

-- 0 when `token` holds the job's lock, -2 when the lock is gone, -6 when another worker holds it.
local function lockState(jobKey, token)
  local owner = redis.call("GET", jobKey .. ":lock")
  if not owner then return -2 end
  if owner ~= token then return -6 end
  return 0
end

local function removeJobKeys(base, id)
  redis.call("DEL", base .. id, base .. id .. ":logs")
end

-- Applies a keep policy to a finished set scored by finishedOn: drop jobs older than
-- `ageSeconds` (nil = no age limit), then keep only the newest `count` (count <= 0: no limit).
-- At most `slice` jobs are deleted per call, oldest first. A backlog (a policy on a queue that
-- already holds many finished jobs, or a quiet spell longer than the age) is worked off by the
-- next finishes, each deleting up to `slice` while adding one.
local function keepFinished(base, set, now, ageSeconds, count, slice)
  local budget = slice
  if ageSeconds then
    local old = redis.call("ZRANGEBYSCORE", set, "-inf", now - ageSeconds * 1000, "LIMIT", 0, budget)
    for _, id in ipairs(old) do removeJobKeys(base, id) end
    if #old > 0 then redis.call("ZREMRANGEBYRANK", set, 0, #old - 1) end
    budget = budget - #old
  end
  if count and count > 0 and budget > 0 then
    local excess = math.min(redis.call("ZCARD", set) - count, budget)
    if excess > 0 then
      for _, id in ipairs(redis.call("ZRANGE", set, 0, excess - 1)) do removeJobKeys(base, id) end
      redis.call("ZREMRANGEBYRANK", set, 0, excess - 1)
    end
  end
end

-- Takes a job this worker holds out of `active`: 0, or -2 / -6 (lock gone / held by another
-- worker) or -3 (not active), in which case nothing was changed.
local function releaseActive(activeKey, jobKey, id, lockValue)
  local lock = lockState(jobKey, lockValue)
  if lock < 0 then return lock end
  if redis.call("LREM", activeKey, -1, id) < 1 then return -3 end
  redis.call("DEL", jobKey .. ":lock")
  return 0
end

-- Records a finished job in `set` (scored by finishedOn), with `field` = `value` when given, then
-- applies the keep policy (deleting at most `slice` old jobs); a keep count of 0 deletes the job
-- at once instead.
local function storeFinished(base, set, id, now, ageSeconds, keepCount, slice, field, value)
  if keepCount == 0 then
    removeJobKeys(base, id)
    return
  end
  redis.call("ZADD", set, now, id)
  if field then
    redis.call("HMSET", base .. id, field, value, "finishedOn", now)
  else
    redis.call("HSET", base .. id, "finishedOn", now)
  end
  if ageSeconds or keepCount > 0 then
    keepFinished(base, set, now, ageSeconds, keepCount, slice)
  end
end

-- Frees a debounce slot held until the job finishes (one without a TTL).
local function releaseDebounce(base, jobKey)
  local deid = redis.call("HGET", jobKey, "deid")
  if deid then
    local deKey = base .. "de:" .. deid
    local ttl = redis.call("PTTL", deKey)
    if ttl == 0 or ttl == -1 then redis.call("DEL", deKey) end
  end
end
