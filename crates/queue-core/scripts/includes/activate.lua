-- Include: making a job active for this worker.

-- The job's hash as a flat field/value list. An id without a hash (an orphan) is taken out of
-- `active` and the list is empty.
local function readJob(base, activeKey, id)
  local fields = redis.call("HGETALL", base .. id)
  if #fields == 0 then
    redis.call("LREM", activeKey, 1, id)
    redis.call("ZREM", base .. "priority", id)
  end
  return fields
end

-- Locks the job with `lockValue` (unique per activation), takes it out of the priority set if it
-- has a priority, publishes `active@<workerToken>` and stamps processedOn. Returns
-- {"job", id, fields} with the new processedOn.
local function activate(base, activeKey, id, fields, lockValue, lockMs, now, workerToken)
  local jobKey = base .. id
  redis.call("SET", jobKey .. ":lock", lockValue, "PX", lockMs)
  for i = 1, #fields, 2 do
    if fields[i] == "priority" then
      if (tonumber(fields[i + 1]) or 0) > 0 then
        redis.call("ZREM", base .. "priority", id)
      end
      break
    end
  end
  redis.call("PUBLISH", activeKey .. "@" .. workerToken, id)
  redis.call("HSET", jobKey, "processedOn", now)
  fields[#fields + 1] = "processedOn"
  fields[#fields + 1] = now
  return {"job", id, fields}
end
