//! The Lua scripts the Redis backend runs. Each touches the keys of one hash
//! slot only (one shard's, or the membership's), so they run on Redis Cluster.
//!
//! Fencing: a shard's registrations and outbox are written only by scripts
//! that first compare the shard's whole owner record (`node|incarnation|epoch`)
//! with the one the writer holds. The whole record, not only the epoch: after
//! a failover that lost the last claim, Redis can hand the same epoch out
//! again to another node. An empty record means "not in a cluster: no check".

use redis::Script;

/// Registration compare-and-set. KEYS: owner, registrations. ARGV: fence,
/// node, expected value ('' = absent), new value ('' = delete). Returns 1
/// written, 0 changed since read, -1 fenced.
const COMPARE_AND_SET: &str = r"
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local current = redis.call('HGET', KEYS[2], ARGV[2]) or ''
if current ~= ARGV[3] then return 0 end
if ARGV[4] == '' then
  redis.call('HDEL', KEYS[2], ARGV[2])
else
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
end
return 1
";

/// Outbox writes of one shard. KEYS: owner, outbox. ARGV: fence, then pairs
/// of entry key and value ('' = delete). Returns 1 applied, 0 fenced.
const OUTBOX_APPLY: &str = r"
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
for i = 2, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', KEYS[2], ARGV[i])
  else
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  end
end
return 1
";

/// Membership. KEYS: members (zset node → lease end, ms on Redis' clock),
/// nodes (hash node → `incarnation|address`). ARGV: node, info, lease ms,
/// mode: `join` (a new incarnation), `renew` (only while the same incarnation
/// is still a member: one whose lease ran out must join again as a new one),
/// `leave`, `read` (no change of its own). Removes expired members, then
/// returns Redis' time and every live member as node, lease end, info (all
/// strings), or false for a refused renew.
const MEMBERS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, n in ipairs(expired) do
  redis.call('ZREM', KEYS[1], n)
  redis.call('HDEL', KEYS[2], n)
end
local mine = redis.call('HGET', KEYS[2], ARGV[1])
if ARGV[4] == 'renew' and mine ~= ARGV[2] then return false end
if ARGV[4] == 'leave' then
  if mine == ARGV[2] then
    redis.call('ZREM', KEYS[1], ARGV[1])
    redis.call('HDEL', KEYS[2], ARGV[1])
  end
elseif ARGV[4] ~= 'read' then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
end
local out = {tostring(now)}
local live = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #live, 2 do
  table.insert(out, live[i])
  table.insert(out, live[i + 1])
  table.insert(out, redis.call('HGET', KEYS[2], live[i]) or '')
end
return out
";

/// Takes a shard. KEYS: owner. ARGV: the record read before deciding ('' =
/// none), `node|incarnation`. Writes the new record with the epoch one above
/// the old one and returns it, or false if the record changed since it was read.
const CLAIM: &str = r"
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then return false end
local epoch = tonumber(string.match(current, '|(%d+)$') or '0')
local record = ARGV[2] .. '|' .. string.format('%d', epoch + 1)
redis.call('SET', KEYS[1], record)
return record
";

/// Hands a shard back. KEYS: owner. ARGV: the record held. Leaves `-|-|epoch`
/// so the next owner continues the epochs; 1 if released, 0 if not ours.
const RELEASE: &str = r"
local current = redis.call('GET', KEYS[1])
if current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], '-|-|' .. (string.match(current, '|(%d+)$') or '0'))
return 1
";

/// The scripts, hashed once.
pub(super) struct Scripts {
    pub(super) cas: Script,
    pub(super) outbox: Script,
    pub(super) members: Script,
    pub(super) claim: Script,
    pub(super) release: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Self {
            cas: Script::new(COMPARE_AND_SET),
            outbox: Script::new(OUTBOX_APPLY),
            members: Script::new(MEMBERS),
            claim: Script::new(CLAIM),
            release: Script::new(RELEASE),
        }
    }
}
