//! The broker's Lua scripts. Each touches the keys of one slot only (a group's bucket, see
//! `keys`), so each runs as one atomic step on a Redis Cluster as on a single Redis.

use std::sync::LazyLock;

/// Numbers, windows and publishes each publication, and appends the jobs, in one atomic step
/// (`Broker::publish_all`). The stamp is `event::stamp`'s, byte for byte; each job gets the first
/// publication's position, as `jobs::stamp` writes it (where a stored chat message stands in its chat).
/// KEYS: the jobs stream, then each publication's counter and window, then (for a send made
/// once) its `sent` record.
/// ARGV: window length, window TTL (s), counter TTL (s), publication count n, the `sent` record's
/// TTL (0: none), the publish command (`PUBLISH` on one Redis, `SPUBLISH` on a cluster), the
/// publishing node's clock in ms (the stamp's `at`), then each publication's channel and
/// payload, then the jobs.
/// Returns the first publication's seq, or for a send already made its first payload.
///
/// What a publication costs Redis is what this script runs for it, so the common path is
/// short: `HINCRBY` the counter (its answer says whether the counter is new), `HGET` its epoch,
/// `XADD` to the window, two `EXPIRE`s, the publish. Only a new counter reads Redis's clock
/// (its epoch and first number come from it, so that numbers never go back, whichever node
/// made the counter). A window found ahead of its counter starts a new epoch past it
/// (`new_epoch`), so that a group cannot be wedged by what something else wrote there.
const PUBLISH: &str = r#"
local len, ttl, counter_ttl, n, once = tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local publish, at = ARGV[6], ARGV[7]
if once > 0 then
  local first = redis.call('GET', KEYS[2 * n + 2])
  if first then return first end
  redis.call('SET', KEYS[2 * n + 2], ARGV[9], 'EX', once)
end
local function stamped(payload, head)
  if head == nil or string.sub(payload, 1, 1) ~= '{' then return payload end
  local rest = string.sub(payload, 2)
  local sep = ','
  if string.match(rest, '^%s*}') then sep = '' end
  return head .. sep .. rest
end
-- A new epoch for a group: its counter starts afresh at its creation time in ms
-- (Position::counter_start), past `floor`, and its window is emptied.
local function new_epoch(counter, window, floor)
  local now = redis.call('TIME')
  local epoch = now[1] .. string.format('%06d', tonumber(now[2]))
  local seq = math.max(tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + 1, floor + 1)
  redis.call('HSET', counter, 'epoch', epoch, 'seq', seq)
  redis.call('DEL', window)
  return epoch, seq
end
local function head(seq, epoch)
  return '{"seq":' .. seq .. ',"epoch":' .. epoch .. ',"at":' .. at
end
local job_head, first_seq = nil, 0
for i = 1, n do
  local counter, window = KEYS[2 * i], KEYS[2 * i + 1]
  local channel = ARGV[6 + 2 * i]
  local seq = redis.call('HINCRBY', counter, 'seq', 1)
  local epoch
  if seq == 1 then
    epoch, seq = new_epoch(counter, window, 0)
  else
    epoch = redis.call('HGET', counter, 'epoch') or '0'
  end
  redis.call('EXPIRE', counter, counter_ttl)
  local payload = stamped(ARGV[7 + 2 * i], head(seq, epoch))
  if len > 0 then
    local added = redis.pcall('XADD', window, 'MAXLEN', '~', len, seq .. '-0', 'p', payload)
    if type(added) == 'table' and added.err then
      if not string.find(added.err, 'equal or smaller', 1, true) then return redis.error_reply(added.err) end
      -- The window is ahead of the counter (a clock that went back on a failover, a key
      -- restored from a backup, anything else that wrote to it): every later publication
      -- would fail the same way. The group starts a new epoch past the window's top instead;
      -- its sockets resynchronise as after any new epoch.
      local top = redis.call('XREVRANGE', window, '+', '-', 'COUNT', 1)
      local floor = seq
      if top[1] then floor = math.max(seq, tonumber(string.match(top[1][1], '^%d+'))) end
      -- A top past any clock's milliseconds is no position to follow: numbers go on from the clock.
      if floor >= 1e13 then floor = seq end
      epoch, seq = new_epoch(counter, window, floor)
      redis.call('EXPIRE', counter, counter_ttl)
      payload = stamped(ARGV[7 + 2 * i], head(seq, epoch))
      redis.call('XADD', window, 'MAXLEN', '~', len, seq .. '-0', 'p', payload)
    end
    redis.call('EXPIRE', window, ttl)
  end
  if i == 1 then first_seq = seq end
  job_head = job_head or ('{"group_seq":' .. seq .. ',"group_epoch":' .. epoch)
  redis.call(publish, channel, payload)
end
for j = 8 + 2 * n, #ARGV do
  redis.call('XADD', KEYS[1], '*', 'job', stamped(ARGV[j], job_head))
end
return first_seq
"#;

/// Each group's current position and its window after a position, read atomically.
/// KEYS: each group's counter and window. ARGV: each group's epoch and seq asked for (epoch
/// `current`: the seq is in whatever counter the group is on now).
/// Returns per group `{epoch, seq, id1, payload1, id2, payload2, ...}`.
const WINDOW: &str = r#"
local out = {}
for i = 1, #KEYS / 2 do
  local counter, window = KEYS[2 * i - 1], KEYS[2 * i]
  local epoch, after = ARGV[2 * i - 1], ARGV[2 * i]
  local at = redis.call('HMGET', counter, 'epoch', 'seq')
  local read = {at[1] or '0', at[2] or '0'}
  local from = '-'
  if read[1] == epoch or epoch == 'current' then from = '(' .. after .. '-0' end
  for _, entry in ipairs(redis.call('XRANGE', window, from, '+')) do
    table.insert(read, entry[1])
    table.insert(read, entry[2][2])
  end
  out[i] = read
end
return out
"#;

/// Acks jobs and deletes them: a stream keeps only work not yet done, so it does not grow
/// forever. KEYS: jobs streams. ARGV: the consumer group, then for each stream the number of its
/// entry ids and the ids.
const ACK: &str = r#"
local at, deleted = 2, 0
for _, stream in ipairs(KEYS) do
  local count = tonumber(ARGV[at])
  local ids = {unpack(ARGV, at + 1, at + count)}
  redis.call('XACK', stream, ARGV[1], unpack(ids))
  deleted = deleted + redis.call('XDEL', stream, unpack(ids))
  at = at + 1 + count
end
return deleted
"#;

/// Moves a job to the dead letters, with why. KEYS: the jobs stream, its dead letters.
/// ARGV: the consumer group, the entry id, the job, the error, the job's handed-out id.
const DEAD_LETTER: &str = r#"
redis.call('XADD', KEYS[2], '*', 'job', ARGV[3], 'error', ARGV[4], 'job_id', ARGV[5])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return redis.call('XDEL', KEYS[1], ARGV[2])
"#;

/// Puts a dead letter back on its jobs stream. KEYS: the jobs stream, its dead letters.
/// ARGV: the dead letter's id, the job. 1 if it was there.
const REPLAY: &str = r#"
if redis.call('XDEL', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('XADD', KEYS[1], '*', 'job', ARGV[2])
return 1
"#;

/// A worker's heartbeat, and the workers whose heartbeat ran out. KEYS: the workers' zset.
/// ARGV: the consumer, its expiry in ms (0: it stopped cleanly, its jobs are free at once).
/// Returns `{{name, ms since its expiry}, ...}` of every expired worker.
const WORKER_BEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expiry = tonumber(ARGV[2])
if expiry > 0 then expiry = now + expiry end
redis.call('ZADD', KEYS[1], expiry, ARGV[1])
local out = {}
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now, 'WITHSCORES')
for i = 1, #expired, 2 do
  table.insert(out, {expired[i], now - tonumber(expired[i + 1])})
end
return out
"#;

/// Takes over what dead consumers left pending, at once (whatever its idle time).
/// KEYS: jobs streams (of one slot). ARGV: the consumer group, the claiming consumer, the most
/// to take per stream and dead consumer, how many dead consumers n, their names, then the ones
/// to remove from the group once nothing is pending for them.
/// Returns `{kept, {claimed of stream 1, claimed of stream 2, ...}}`: `kept` the names to remove
/// that still had jobs pending (more than `max`), each `claimed` `{{id, job}, {id, job}, ...}`.
const CLAIM_OF: &str = r#"
local group, me, max, n = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local kept, out = {}, {}
for s, stream in ipairs(KEYS) do
  local claimed = {}
  for i = 5, 4 + n do
    local pending = redis.call('XPENDING', stream, group, '-', '+', max, ARGV[i])
    if #pending > 0 then
      local ids = {}
      for _, p in ipairs(pending) do table.insert(ids, p[1]) end
      for _, entry in ipairs(redis.call('XCLAIM', stream, group, me, 0, unpack(ids))) do
        if entry and entry[2] then
          for f = 1, #entry[2], 2 do
            if entry[2][f] == 'job' then
              table.insert(claimed, {entry[1], entry[2][f + 1]})
            end
          end
        end
      end
    end
  end
  for i = 5 + n, #ARGV do
    if #redis.call('XPENDING', stream, group, '-', '+', 1, ARGV[i]) == 0 then
      redis.call('XGROUP', 'DELCONSUMER', stream, group, ARGV[i])
    else
      table.insert(kept, ARGV[i])
    end
  end
  out[s] = claimed
end
return {kept, out}
"#;

// Several steps on one slot are scripts, not MULTI/EXEC: a Redis Cluster client follows a
// MOVED or ASK answer for a script, not for a transaction that failed on one.
pub(super) static ACK_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(ACK));
pub(super) static DEAD_LETTER_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(DEAD_LETTER));
pub(super) static REPLAY_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(REPLAY));
pub(super) static WORKER_BEAT_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(WORKER_BEAT));
pub(super) static CLAIM_OF_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(CLAIM_OF));

// Each script is built once (its SHA1 computed once); EVALSHA falls back to loading it (on a
// cluster, on the master the call went to).
pub(super) static PUBLISH_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(PUBLISH));
pub(super) static WINDOW_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(WINDOW));
