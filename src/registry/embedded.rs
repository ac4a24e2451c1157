//! The embedded backend: one redb file, durable on every commit.

use super::model::{Edit, decode, encode};
use super::{OutboxWrite, Registration, RegistryError};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::path::Path;

const REGISTRATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("registrations");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const OUTBOX: TableDefinition<&str, &[u8]> = TableDefinition::new("outbox");
const DEPLOYMENT_KEY: &str = "deployment_key";
const FILE_NAME: &str = "pushgate.redb";

/// Registrations in a redb database under a directory.
pub(crate) struct EmbeddedStore {
    db: Database,
}

fn storage(e: impl Into<redb::Error>) -> RegistryError {
    RegistryError::Embedded(e.into())
}

/// redb's page cache. Its default (1 GiB) would make the gateway's memory grow
/// with the registry; pages beyond this are read again through the kernel's
/// page cache, which costs a system call, not a disk read, on a warm machine.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

impl EmbeddedStore {
    /// Opens or creates `dir/pushgate.redb`. Fails clearly when another process
    /// has it open.
    pub(crate) fn open(dir: &Path) -> Result<Self, RegistryError> {
        std::fs::create_dir_all(dir).map_err(|e| RegistryError::Open {
            path: dir.to_owned(),
            source: e.into(),
        })?;
        let path = dir.join(FILE_NAME);
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| RegistryError::Open {
                path: path.clone(),
                source: e.into(),
            })?;
        let txn = db.begin_write().map_err(storage)?;
        {
            txn.open_table(REGISTRATIONS).map_err(storage)?;
            txn.open_table(META).map_err(storage)?;
            txn.open_table(OUTBOX).map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        Ok(Self { db })
    }

    /// The deployment key, created at random on first use and kept forever: node
    /// ids depend on it.
    pub(crate) fn deployment_key(&self) -> Result<[u8; 32], RegistryError> {
        let txn = self.db.begin_write().map_err(storage)?;
        let key = {
            let mut meta = txn.open_table(META).map_err(storage)?;
            let existing = meta
                .get(DEPLOYMENT_KEY)
                .map_err(storage)?
                .map(|v| v.value().to_vec());
            match existing {
                Some(bytes) => <[u8; 32]>::try_from(bytes.as_slice())
                    .map_err(|_| RegistryError::BadDeploymentKey)?,
                None => {
                    let key: [u8; 32] = rand::random();
                    meta.insert(DEPLOYMENT_KEY, key.as_slice())
                        .map_err(storage)?;
                    key
                }
            }
        };
        txn.commit().map_err(storage)?;
        Ok(key)
    }

    /// The registration of `node`.
    pub(crate) fn get(&self, node: &str) -> Result<Option<Registration>, RegistryError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(REGISTRATIONS).map_err(storage)?;
        let value = table.get(node).map_err(storage)?;
        value.map(|v| decode(node, v.value())).transpose()
    }

    /// Reads `node` and applies what `decide` says in one write transaction;
    /// returns what was applied.
    pub(crate) fn edit(
        &self,
        node: &str,
        decide: impl FnOnce(Option<&Registration>) -> Edit,
    ) -> Result<Edit, RegistryError> {
        let txn = self.db.begin_write().map_err(storage)?;
        let applied = {
            let mut table = txn.open_table(REGISTRATIONS).map_err(storage)?;
            let existing = table
                .get(node)
                .map_err(storage)?
                .map(|v| decode(node, v.value()))
                .transpose()?;
            let edit = decide(existing.as_ref());
            match &edit {
                Edit::Keep => {}
                Edit::Remove => {
                    table.remove(node).map_err(storage)?;
                }
                Edit::Put(updated) => {
                    let bytes = encode(updated)?;
                    table.insert(node, bytes.as_slice()).map_err(storage)?;
                }
            }
            edit
        };
        if matches!(applied, Edit::Keep) {
            txn.abort().map_err(storage)?;
        } else {
            txn.commit().map_err(storage)?;
        }
        Ok(applied)
    }

    /// Writes registrations as they are, in one transaction (import).
    pub(crate) fn put_many(&self, registrations: &[Registration]) -> Result<(), RegistryError> {
        let txn = self.db.begin_write().map_err(storage)?;
        {
            let mut table = txn.open_table(REGISTRATIONS).map_err(storage)?;
            for r in registrations {
                let bytes = encode(r)?;
                table
                    .insert(r.node.as_str(), bytes.as_slice())
                    .map_err(storage)?;
            }
        }
        txn.commit().map_err(storage)
    }

    /// Every registration as stored: `(node, value)`.
    pub(crate) fn registrations(&self) -> Result<Vec<(String, Vec<u8>)>, RegistryError> {
        self.all(REGISTRATIONS)
    }

    /// Replaces the deployment key (import into an empty store).
    pub(crate) fn set_deployment_key(&self, key: &[u8; 32]) -> Result<(), RegistryError> {
        let txn = self.db.begin_write().map_err(storage)?;
        {
            let mut meta = txn.open_table(META).map_err(storage)?;
            meta.insert(DEPLOYMENT_KEY, key.as_slice())
                .map_err(storage)?;
        }
        txn.commit().map_err(storage)
    }

    /// Number of registrations.
    pub(crate) fn count(&self) -> Result<u64, RegistryError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(REGISTRATIONS).map_err(storage)?;
        table.len().map_err(storage)
    }
}

impl EmbeddedStore {
    /// Applies outbox writes in order, in one durable transaction: the group
    /// commit that lets many publishes share one fsync.
    pub(crate) fn outbox_apply(&self, writes: &[OutboxWrite]) -> Result<(), RegistryError> {
        let txn = self.db.begin_write().map_err(storage)?;
        {
            let mut table = txn.open_table(OUTBOX).map_err(storage)?;
            for write in writes {
                match &write.value {
                    Some(value) => {
                        table
                            .insert(write.key.as_str(), value.as_slice())
                            .map_err(storage)?;
                    }
                    None => {
                        table.remove(write.key.as_str()).map_err(storage)?;
                    }
                }
            }
        }
        txn.commit().map_err(storage)
    }

    /// Every outbox entry, as stored.
    pub(crate) fn outbox_load(&self) -> Result<Vec<(String, Vec<u8>)>, RegistryError> {
        self.all(OUTBOX)
    }

    fn all(
        &self,
        definition: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<(String, Vec<u8>)>, RegistryError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(definition).map_err(storage)?;
        let mut entries = Vec::new();
        for item in table.iter().map_err(storage)? {
            let (key, value) = item.map_err(storage)?;
            entries.push((key.value().to_owned(), value.value().to_vec()));
        }
        Ok(entries)
    }
}
