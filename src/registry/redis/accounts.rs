//! Which nodes each account holds, for the per-account cap
//! (`registrations.max_per_account`): a set per account,
//! `pg:{a<account hash>}:nodes`, in its own hash slot.
//!
//! The set is kept beside the registrations, not in the same script: the
//! registrations are spread by node over shards (and, in a gateway cluster,
//! over owners), an account's over many of them. So the set can lag a write
//! that failed half-way: missing a node (one more registration gets through
//! the cap) or listing one that is gone (checked against its registration,
//! and dropped, before a registration is refused for the cap).

use super::RedisStore;
use super::connections::Conn;
use crate::registry::RegistryError;
use crate::registry::model::decode;
use futures_util::StreamExt as _;
use std::collections::BTreeMap;

/// Set once every registration stored before the sets existed is in one.
const INDEXED_KEY: &str = "pg:{meta}:account_index";
/// Shards read at once while indexing.
const INDEX_FAN_OUT: usize = 8;

fn account_key(account_hash: &str) -> String {
    format!("pg:{{a{account_hash}}}:nodes")
}

impl RedisStore {
    /// Records that `node` belongs to the account, or no longer does.
    pub(crate) async fn account_node(
        &self,
        account_hash: &str,
        node: &str,
        present: bool,
    ) -> Result<(), RegistryError> {
        let key = account_key(account_hash);
        let command = if present { "SADD" } else { "SREM" };
        self.conns
            .run(|mut c: Conn| async move {
                redis::cmd(command)
                    .arg(&key)
                    .arg(node)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await
    }

    /// Whether the account holds fewer than `cap` registrations. At the cap,
    /// each node listed is checked against its registration and the stale
    /// ones dropped from the set first.
    pub(crate) async fn account_has_room(
        &self,
        account_hash: &str,
        cap: u32,
    ) -> Result<bool, RegistryError> {
        let key = account_key(account_hash);
        // Nearly always below the cap: counting costs Redis and this client
        // less than listing.
        let counted: usize = self
            .conns
            .run(|mut c: Conn| {
                let key = key.clone();
                async move { redis::cmd("SCARD").arg(&key).query_async(&mut c).await }
            })
            .await?;
        if counted < cap as usize {
            return Ok(true);
        }
        let listed: Vec<String> = self
            .conns
            .run(|mut c: Conn| {
                let key = key.clone();
                async move { redis::cmd("SMEMBERS").arg(&key).query_async(&mut c).await }
            })
            .await?;
        if listed.len() < cap as usize {
            return Ok(true);
        }
        let mut held = 0usize;
        for node in &listed {
            let current = self.get(node).await?;
            let ours = current
                .and_then(|bytes| decode(node, &bytes).ok())
                .is_some_and(|r| r.account_hash == account_hash);
            if ours {
                held += 1;
            } else {
                self.account_node(account_hash, node, false).await?;
            }
        }
        Ok(held < cap as usize)
    }

    /// Puts every stored registration in its account's set, once per store
    /// (registrations from before the sets existed), a few shards at a time
    /// so memory stays at a shard's worth. Safe to run on several nodes at
    /// once: adding is idempotent.
    pub(crate) async fn index_accounts_once(&self) -> Result<(), RegistryError> {
        let done: Option<String> = self
            .conns
            .run(|mut c: Conn| async move {
                redis::cmd("GET").arg(INDEXED_KEY).query_async(&mut c).await
            })
            .await?;
        if done.is_some() {
            return Ok(());
        }
        let shards = futures_util::stream::iter(0..self.shards)
            .map(|shard| async move { self.index_shard(shard).await })
            .buffer_unordered(INDEX_FAN_OUT);
        let results: Vec<Result<(), RegistryError>> = shards.collect().await;
        results.into_iter().collect::<Result<(), RegistryError>>()?;
        self.conns
            .run(|mut c: Conn| async move {
                redis::cmd("SET")
                    .arg(INDEXED_KEY)
                    .arg("1")
                    .query_async::<()>(&mut c)
                    .await
            })
            .await
    }

    async fn index_shard(&self, shard: u32) -> Result<(), RegistryError> {
        let stored = self.shard_registrations(shard).await?;
        let mut by_account: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (node, bytes) in stored {
            if let Ok(r) = decode(&node, &bytes) {
                by_account.entry(r.account_hash).or_default().push(node);
            }
        }
        self.add_account_nodes(by_account).await
    }

    /// Adds nodes to their accounts' sets (import, indexing).
    pub(crate) async fn add_account_nodes(
        &self,
        by_account: BTreeMap<String, Vec<String>>,
    ) -> Result<(), RegistryError> {
        let pipes = by_account.into_iter().map(|(account, nodes)| {
            let mut pipe = redis::pipe();
            pipe.sadd(account_key(&account), nodes).ignore();
            pipe
        });
        self.run_pipelines(pipes.collect()).await
    }
}
