-- Include: walking a list from its tail, one slice per script call, across calls.

-- The next window of the walk over `key`: up to `slice` entries head-ward of the `skip` entries
-- at the tail that earlier calls looked at and left in place. `cursor` is the one of those
-- nearest the head ("" while skip is 0). Between calls other clients pop and push, so the
-- cursor is checked where it should be; when it moved, it is looked for among the entries at
-- the tail (a bounded LPOS), and when it is gone (popped, with everything tail-ward of it) the
-- walk starts again at the tail, which only looks at some entries twice.
-- Returns the window's ids (head to tail), the list index of its first id, and the skip used.
local function listWindow(key, skip, cursor, slice)
  local len = redis.call("LLEN", key)
  if skip > 0 and redis.call("LINDEX", key, -skip) ~= cursor then
    local at = redis.call("LPOS", key, cursor, "RANK", -1, "MAXLEN", skip + slice)
    if at then skip = len - at else skip = 0 end
  end
  local stop = len - skip - 1
  if stop < 0 then return {}, 0, skip end
  local first = math.max(stop - slice + 1, 0)
  return redis.call("LRANGE", key, first, stop), first, skip
end

-- Takes out of `key` the `count` entries a walk overwrote with "" (no job id is empty). They lie
-- within the walked tail, so the scan from the tail stops there.
local function dropMarked(key, count)
  if count > 0 then
    redis.call("LREM", key, -count, "")
  end
end
