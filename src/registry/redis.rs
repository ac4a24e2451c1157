//! The Redis backend (single server or Redis Cluster).
//!
//! Key layout, every key of a shard under the hash tag `{s<shard>}` so that a
//! cluster keeps a shard in one slot and every command below stays in one slot:
//!
//! - `pg:{meta}:shards`, `pg:{meta}:deployment_key`: set once, checked at start;
//! - `pg:{s<n>}:reg`: hash, node → registration (JSON, as in the embedded store);
//! - `pg:{s<n>}:outbox`: hash, outbox key → entry;
//! - `pg:{s<n>}:owner`: the shard's owner record in a cluster (`leases`); every
//!   write of the two above is a script that first compares it (`scripts`);
//! - `pg:{m}:members`, `pg:{m}:nodes`: cluster membership (`leases`);
//! - `pg:{a<account hash>}:nodes`: set, the nodes of one account, for the
//!   per-account cap (`accounts`); `pg:{meta}:account_index` once every
//!   older registration is in one.
//!
//! Redis commands per operation (round trips in brackets):
//! - publish, registration cached: none here; the outbox write that admits it is
//!   part of the pool's group commit, one `MULTI HSET… HDEL… EXEC` per flush on
//!   a single server [1], one per shard touched, concurrently, on a Redis
//!   Cluster [1]; in a gateway cluster, a script per shard instead (`outbox`);
//! - publish, registration not cached: `HGET` [1] more;
//! - register / unregister / dead token: `HGET`, then a compare-and-set script
//!   (`EVALSHA`) that writes only if the value is still what was read, and in a
//!   cluster only while the shard's owner record is still ours [2]; a new
//!   registration or a removal then updates the account's set [1], and a new
//!   one first counts it (`SMEMBERS`) [1] (at the cap, an `HGET` per node);
//! - metrics count: `HLEN` per shard, pipelined on a single server.

mod accounts;
mod connections;
mod leases;
mod outbox;
mod scripts;

pub(crate) use leases::{Member, Membership, owner_key as shard_owner_key, slot_key};

use super::shard::shard_of;
use super::{NodeKeys, RegistryError};
use crate::config::StoreConfig;
use connections::{Conn, Connections};
use futures_util::StreamExt as _;
use std::collections::{BTreeMap, HashMap};

const SHARDS_KEY: &str = "pg:{meta}:shards";
const DEPLOYMENT_KEY: &str = "pg:{meta}:deployment_key";
/// Requests in flight at once when one operation touches every shard.
const FAN_OUT: usize = 64;

/// Registrations and the outbox in Redis.
pub(crate) struct RedisStore {
    conns: Connections,
    shards: u32,
    scripts: scripts::Scripts,
}

/// What a fenced compare-and-set did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cas {
    /// The new value is stored.
    Written,
    /// The value changed since it was read; nothing written.
    Changed,
    /// The shard's owner record is no longer the one given; nothing written.
    Fenced,
}

fn registrations_key(shard: u32) -> String {
    format!("pg:{{s{shard}}}:reg")
}

fn outbox_key(shard: u32) -> String {
    format!("pg:{{s{shard}}}:outbox")
}

fn owner_key(shard: u32) -> String {
    format!("pg:{{s{shard}}}:owner")
}

impl RedisStore {
    /// Prepares the store without connecting (see [`Self::prepare`]).
    pub(crate) fn new(config: &StoreConfig) -> Result<Self, RegistryError> {
        Ok(Self {
            conns: Connections::new(config)?,
            shards: config.shards.max(1),
            scripts: scripts::Scripts::new(),
        })
    }

    /// Records the shard count and the deployment key on first use, checks them
    /// on every later one, and returns the deployment key.
    pub(crate) async fn prepare(&self) -> Result<[u8; 32], RegistryError> {
        let fresh_key = hex::encode(rand::random::<[u8; 32]>());
        let (recorded, key): (u32, String) = self
            .conns
            .run(|mut c| async move {
                redis::pipe()
                    .cmd("SET")
                    .arg(SHARDS_KEY)
                    .arg(self.shards)
                    .arg("NX")
                    .ignore()
                    .cmd("SET")
                    .arg(DEPLOYMENT_KEY)
                    .arg(&fresh_key)
                    .arg("NX")
                    .ignore()
                    .cmd("GET")
                    .arg(SHARDS_KEY)
                    .cmd("GET")
                    .arg(DEPLOYMENT_KEY)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        if recorded != self.shards {
            return Err(RegistryError::ShardMismatch {
                configured: self.shards,
                recorded,
            });
        }
        NodeKeys::key_from_hex(&key).ok_or(RegistryError::BadDeploymentKey)
    }

    /// Replaces the deployment key (import into an empty store).
    pub(crate) async fn set_deployment_key(&self, key: &[u8; 32]) -> Result<(), RegistryError> {
        let value = hex::encode(key);
        self.conns
            .run(|mut c| async move {
                redis::cmd("SET")
                    .arg(DEPLOYMENT_KEY)
                    .arg(&value)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await
    }

    /// Answers once Redis does.
    pub(crate) async fn ping(&self) -> Result<(), RegistryError> {
        self.conns
            .run(|mut c| async move { redis::cmd("PING").query_async::<()>(&mut c).await })
            .await
    }

    /// The stored value of `node`.
    pub(crate) async fn get(&self, node: &str) -> Result<Option<Vec<u8>>, RegistryError> {
        let key = registrations_key(shard_of(node, self.shards));
        self.conns
            .run(|mut c| async move {
                redis::cmd("HGET")
                    .arg(&key)
                    .arg(node)
                    .query_async(&mut c)
                    .await
            })
            .await
    }

    /// Writes `new` (or deletes with `None`) at `node` if the stored value is
    /// still `expected` and, unless `fence` is empty, the shard's owner record
    /// is still `fence`.
    pub(crate) async fn compare_and_set(
        &self,
        node: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        fence: &str,
    ) -> Result<Cas, RegistryError> {
        let shard = shard_of(node, self.shards);
        let mut invocation = self.scripts.cas.key(owner_key(shard));
        invocation
            .key(registrations_key(shard))
            .arg(fence)
            .arg(node)
            .arg(expected.unwrap_or_default())
            .arg(new.unwrap_or_default());
        let answer: i64 = self
            .conns
            .run(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        Ok(match answer {
            1 => Cas::Written,
            0 => Cas::Changed,
            _ => Cas::Fenced,
        })
    }

    /// Writes registrations as they are, in one pipeline per shard (import).
    pub(crate) async fn put_many(
        &self,
        values: Vec<(String, Vec<u8>)>,
    ) -> Result<(), RegistryError> {
        let mut by_shard: BTreeMap<u32, Vec<(String, Vec<u8>)>> = BTreeMap::new();
        for (node, value) in values {
            by_shard
                .entry(shard_of(&node, self.shards))
                .or_default()
                .push((node, value));
        }
        let pipes = by_shard.into_iter().map(|(shard, items)| {
            let mut pipe = redis::pipe();
            pipe.hset_multiple(registrations_key(shard), &items)
                .ignore();
            pipe
        });
        self.run_pipelines(pipes.collect()).await
    }

    /// Number of registrations.
    pub(crate) async fn count(&self) -> Result<u64, RegistryError> {
        let lengths: Vec<u64> = self
            .per_shard(|shard| redis::cmd("HLEN").arg(registrations_key(shard)).to_owned())
            .await?;
        Ok(lengths.iter().sum())
    }

    /// Every registration as stored: `(node, value)`.
    pub(crate) async fn registrations(&self) -> Result<Vec<(String, Vec<u8>)>, RegistryError> {
        let maps: Vec<HashMap<String, Vec<u8>>> = self
            .per_shard(|shard| {
                redis::cmd("HGETALL")
                    .arg(registrations_key(shard))
                    .to_owned()
            })
            .await?;
        Ok(maps.into_iter().flatten().collect())
    }

    /// The registrations of one shard, as stored.
    pub(crate) async fn shard_registrations(
        &self,
        shard: u32,
    ) -> Result<Vec<(String, Vec<u8>)>, RegistryError> {
        let key = registrations_key(shard);
        let map: HashMap<String, Vec<u8>> = self
            .conns
            .run(|mut c: Conn| {
                let key = key.clone();
                async move { redis::cmd("HGETALL").arg(&key).query_async(&mut c).await }
            })
            .await?;
        Ok(map.into_iter().collect())
    }

    /// Every outbox entry of `shards` (all shards if `None`), as stored.
    pub(crate) async fn outbox_load(
        &self,
        shards: Option<&[u32]>,
    ) -> Result<Vec<(String, Vec<u8>)>, RegistryError> {
        let all: Vec<u32> = (0..self.shards).collect();
        let wanted = shards.unwrap_or(&all);
        let maps: Vec<HashMap<String, Vec<u8>>> = self
            .on_shards(wanted, |shard| {
                redis::cmd("HGETALL").arg(outbox_key(shard)).to_owned()
            })
            .await?;
        Ok(maps.into_iter().flatten().collect())
    }

    /// Runs `command(shard)` for every shard.
    async fn per_shard<T: redis::FromRedisValue + Send + 'static>(
        &self,
        command: impl Fn(u32) -> redis::Cmd,
    ) -> Result<Vec<T>, RegistryError> {
        let all: Vec<u32> = (0..self.shards).collect();
        self.on_shards(&all, command).await
    }

    /// Runs `command(shard)` for each of `shards`, answers in the same order:
    /// one pipeline on a single server, [`FAN_OUT`] at a time on a cluster.
    async fn on_shards<T: redis::FromRedisValue + Send + 'static>(
        &self,
        shards: &[u32],
        command: impl Fn(u32) -> redis::Cmd,
    ) -> Result<Vec<T>, RegistryError> {
        if shards.is_empty() {
            return Ok(Vec::new());
        }
        if !self.conns.is_cluster() {
            let mut pipe = redis::pipe();
            for &shard in shards {
                pipe.add_command(command(shard));
            }
            return self
                .conns
                .run(|mut c: Conn| async move { pipe.query_async(&mut c).await })
                .await;
        }
        let requests = shards.iter().map(|&shard| {
            let cmd = command(shard);
            async move {
                self.conns
                    .run(|mut c: Conn| async move { cmd.query_async::<T>(&mut c).await })
                    .await
            }
        });
        let results: Vec<Result<T, RegistryError>> = futures_util::stream::iter(requests)
            .buffered(FAN_OUT)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// Runs each script invocation (each within one slot), [`FAN_OUT`] at a
    /// time; answers in the same order.
    async fn invoke_each<T: redis::FromRedisValue + Send + 'static>(
        &self,
        invocations: &[redis::ScriptInvocation<'_>],
    ) -> Result<Vec<T>, RegistryError> {
        let requests = invocations.iter().map(|inv| async move {
            self.conns
                .run(|mut c: Conn| async move { inv.invoke_async::<T>(&mut c).await })
                .await
        });
        let results: Vec<Result<T, RegistryError>> = futures_util::stream::iter(requests)
            .buffered(FAN_OUT)
            .collect()
            .await;
        results.into_iter().collect()
    }

    async fn run_pipelines(&self, pipes: Vec<redis::Pipeline>) -> Result<(), RegistryError> {
        let requests = pipes.into_iter().map(|pipe| async move {
            self.conns
                .run(|mut c: Conn| async move { pipe.query_async::<()>(&mut c).await })
                .await
        });
        let results: Vec<Result<(), RegistryError>> = futures_util::stream::iter(requests)
            .buffer_unordered(FAN_OUT)
            .collect()
            .await;
        results.into_iter().collect()
    }
}
