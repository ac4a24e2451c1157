//! Outbox writes. Outside a cluster, plain `HSET`/`HDEL` in one transaction
//! per flush (per shard on a Redis Cluster). In a cluster, one script per
//! shard that checks the owner record first: measured on the throughput
//! bench, the scripts cost a single node about 8% of its rate, so it keeps
//! the plain commands.

use super::connections::Conn;
use super::{RedisStore, outbox_key, owner_key};
use crate::registry::shard::{node_of_outbox_key, shard_of};
use crate::registry::{OutboxWrite, RegistryError};
use std::collections::BTreeMap;
use std::sync::Arc;

impl RedisStore {
    /// Applies outbox writes, the latest per key winning; with `fence`, only
    /// to the shards whose owner record is still `fence(shard)`. Returns the
    /// shards whose writes were refused; the others are durable.
    pub(crate) async fn outbox_apply(
        &self,
        writes: &[&OutboxWrite],
        fence: Option<&(dyn Fn(u32) -> Arc<str> + Sync)>,
    ) -> Result<Vec<u32>, RegistryError> {
        let mut by_shard: BTreeMap<u32, Vec<&OutboxWrite>> = BTreeMap::new();
        for &w in writes {
            by_shard
                .entry(shard_of(node_of_outbox_key(&w.key), self.shards))
                .or_default()
                .push(w);
        }
        match fence {
            Some(fence) => self.outbox_apply_fenced(by_shard, fence).await,
            None => self
                .outbox_apply_plain(&by_shard)
                .await
                .map(|()| Vec::new()),
        }
    }

    /// One transaction per shard, all shards in one pipeline on a single
    /// server, concurrently on a cluster (a transaction cannot span slots).
    async fn outbox_apply_plain(
        &self,
        by_shard: &BTreeMap<u32, Vec<&OutboxWrite>>,
    ) -> Result<(), RegistryError> {
        let shard_pipe = |pipe: &mut redis::Pipeline, shard: u32, items: &[&OutboxWrite]| {
            let key = outbox_key(shard);
            for w in items {
                match &w.value {
                    Some(v) => pipe.hset(&key, &w.key, v.as_slice()).ignore(),
                    None => pipe.hdel(&key, &w.key).ignore(),
                };
            }
        };
        let pipes = if self.conns.is_cluster() {
            by_shard
                .iter()
                .map(|(shard, items)| {
                    let mut pipe = redis::pipe();
                    pipe.atomic();
                    shard_pipe(&mut pipe, *shard, items);
                    pipe
                })
                .collect()
        } else {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for (shard, items) in by_shard {
                shard_pipe(&mut pipe, *shard, items);
            }
            vec![pipe]
        };
        self.run_pipelines(pipes).await
    }

    /// One script per shard that writes only while the shard's owner record
    /// is still `fence(shard)`: all in one transaction on a single server,
    /// concurrently on a cluster.
    async fn outbox_apply_fenced(
        &self,
        by_shard: BTreeMap<u32, Vec<&OutboxWrite>>,
        fence: &(dyn Fn(u32) -> Arc<str> + Sync),
    ) -> Result<Vec<u32>, RegistryError> {
        let shards: Vec<u32> = by_shard.keys().copied().collect();
        let invocations: Vec<redis::ScriptInvocation<'_>> = by_shard
            .iter()
            .map(|(&shard, items)| {
                let mut inv = self.scripts.outbox.key(owner_key(shard));
                inv.key(outbox_key(shard)).arg(&*fence(shard));
                for w in items {
                    inv.arg(&w.key).arg(w.value.as_deref().unwrap_or_default());
                }
                inv
            })
            .collect();
        let applied: Vec<bool> = if self.conns.is_cluster() {
            self.invoke_each(&invocations).await?
        } else {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for inv in &invocations {
                pipe.invoke_script(inv);
            }
            let script = &self.scripts.outbox;
            self.conns
                .run(|mut c: Conn| async move {
                    match pipe.query_async(&mut c).await {
                        Err(e)
                            if e.kind()
                                == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                        {
                            // Redis restarted (or failed over) and lost its
                            // script cache: load and replay (the writes are
                            // idempotent).
                            script.prepare_invoke().load_async(&mut c).await?;
                            pipe.query_async(&mut c).await
                        }
                        other => other,
                    }
                })
                .await?
        };
        Ok(shards
            .into_iter()
            .zip(applied)
            .filter_map(|(shard, ok)| (!ok).then_some(shard))
            .collect())
    }
}
