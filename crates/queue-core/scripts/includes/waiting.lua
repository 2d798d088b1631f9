-- Include: putting a job id in the waiting list.

-- The list waiting jobs go to: `paused` while the queue is globally paused, else `wait`.
-- Every push checks this in the same script, because pause and resume RENAME the lists.
local function waitingList(base)
  if redis.call("EXISTS", base .. "meta-paused") == 1 then
    return base .. "paused"
  end
  return base .. "wait"
end

-- Pushes `id` to `target`. Prioritized jobs (priority > 0) gather at the tail, lowest number
-- nearest the tail, FIFO among equals (Bull's addJobWithPriority); others go to the head, or to
-- the tail (next to run) with `lifo`.
local function pushWaiting(base, target, id, priority, lifo)
  if priority > 0 then
    local priorityKey = base .. "priority"
    redis.call("ZADD", priorityKey, priority, id)
    local ahead = redis.call("ZCOUNT", priorityKey, 0, priority)
    local pivot = redis.call("LINDEX", target, redis.call("LLEN", target) - (ahead - 1))
    if pivot then
      redis.call("LINSERT", target, "BEFORE", pivot, id)
    else
      redis.call("RPUSH", target, id)
    end
  elseif lifo then
    redis.call("RPUSH", target, id)
  else
    redis.call("LPUSH", target, id)
  end
end
