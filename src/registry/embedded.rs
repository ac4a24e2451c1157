//! The embedded backend: one redb file, durable on every commit.

use super::model::{Edit, decode, encode};
use super::{OutboxWrite, Registration, RegistryError};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::path::Path;

const REGISTRATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("registrations");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const OUTBOX: TableDefinition<&str, &[u8]> = TableDefinition::new("outbox");
/// `<account hash>/<node>` → nothing: the nodes of each account, for the
/// per-account cap, written in the same transaction as the registration.
const ACCOUNT_NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("account_nodes");
const DEPLOYMENT_KEY: &str = "deployment_key";
/// Set in `meta` once every registration is in `account_nodes`.
const ACCOUNTS_INDEXED: &str = "account_nodes_indexed";
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
        private_dir(dir).map_err(|e| RegistryError::Open {
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
        // The file holds the deployment key and every device token: the
        // owner's alone, whatever the umask.
        private_file(&path).map_err(|e| RegistryError::Open {
            path: path.clone(),
            source: e.into(),
        })?;
        let txn = db.begin_write().map_err(storage)?;
        {
            txn.open_table(REGISTRATIONS).map_err(storage)?;
            txn.open_table(OUTBOX).map_err(storage)?;
            let mut meta = txn.open_table(META).map_err(storage)?;
            if meta.get(ACCOUNTS_INDEXED).map_err(storage)?.is_none() {
                index_accounts(&txn)?;
                meta.insert(ACCOUNTS_INDEXED, [1u8].as_slice())
                    .map_err(storage)?;
            }
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

    /// One edit in a transaction of its own (tests; the gateway batches
    /// them through [`super::writer::Writer`]).
    #[cfg(test)]
    pub(crate) fn edit(
        &self,
        node: &str,
        cap: u32,
        decide: impl FnOnce(Option<&Registration>) -> Edit + Send + 'static,
    ) -> Result<Edit, RegistryError> {
        let job = EditJob {
            node: node.to_owned(),
            cap,
            decide: Box::new(decide),
        };
        self.write_many(&[], vec![job])?
            .pop()
            .unwrap_or(Err(RegistryError::NotStored))
    }

    /// Applies outbox flushes (each in order, one after the other) and
    /// registration `jobs` in one write transaction and one commit (one
    /// fsync for all: the group commit of [`super::writer::Writer`]). Each
    /// job sees the ones before it, as if run one after the other. A job
    /// refused (a full account, a corrupt value) fails alone; a storage
    /// failure fails all.
    pub(crate) fn write_many(
        &self,
        flushes: &[std::sync::Arc<[OutboxWrite]>],
        jobs: Vec<EditJob>,
    ) -> Result<Vec<Result<Edit, RegistryError>>, RegistryError> {
        let txn = self.db.begin_write().map_err(storage)?;
        if !flushes.is_empty() {
            let mut table = txn.open_table(OUTBOX).map_err(storage)?;
            for write in flushes.iter().flat_map(|f| f.iter()) {
                put_outbox(&mut table, write)?;
            }
        }
        let results = {
            let mut table = txn.open_table(REGISTRATIONS).map_err(storage)?;
            let mut accounts = txn.open_table(ACCOUNT_NODES).map_err(storage)?;
            let mut results = Vec::with_capacity(jobs.len());
            for job in jobs {
                results.push(apply(
                    &mut table,
                    &mut accounts,
                    &job.node,
                    job.cap,
                    job.decide,
                )?);
            }
            results
        };
        if !flushes.is_empty()
            || results
                .iter()
                .any(|r| matches!(r, Ok(Edit::Put(_) | Edit::Remove)))
        {
            txn.commit().map_err(storage)?;
        } else {
            txn.abort().map_err(storage)?;
        }
        Ok(results)
    }

    /// Writes registrations as they are, in one transaction (import).
    pub(crate) fn put_many(&self, registrations: &[Registration]) -> Result<(), RegistryError> {
        let txn = self.db.begin_write().map_err(storage)?;
        {
            let mut table = txn.open_table(REGISTRATIONS).map_err(storage)?;
            let mut accounts = txn.open_table(ACCOUNT_NODES).map_err(storage)?;
            for r in registrations {
                let bytes = encode(r)?;
                table
                    .insert(r.node.as_str(), bytes.as_slice())
                    .map_err(storage)?;
                accounts
                    .insert(
                        account_node(&r.account_hash, &r.node).as_str(),
                        [].as_slice(),
                    )
                    .map_err(storage)?;
            }
        }
        txn.commit().map_err(storage)
    }

    /// Every registration as stored: `(node, value)`.
    pub(crate) fn registrations(&self) -> Result<Vec<(String, Vec<u8>)>, RegistryError> {
        self.all(REGISTRATIONS)
    }

    /// Up to `limit` registrations as stored, in node order, after `after`.
    pub(crate) fn registrations_after(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, RegistryError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(REGISTRATIONS).map_err(storage)?;
        let range = match &after {
            Some(after) => table.range::<&str>((
                std::ops::Bound::Excluded(after.as_str()),
                std::ops::Bound::Unbounded,
            )),
            None => table.range::<&str>(..),
        }
        .map_err(storage)?;
        let mut page = Vec::new();
        for item in range.take(limit) {
            let (key, value) = item.map_err(storage)?;
            page.push((key.value().to_owned(), value.value().to_vec()));
        }
        Ok(page)
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

/// What an edit does, given the stored registration.
pub(crate) type Decide = Box<dyn FnOnce(Option<&Registration>) -> Edit + Send>;

/// One registration edit of a batch ([`EmbeddedStore::write_many`]).
pub(crate) struct EditJob {
    /// The node.
    pub node: String,
    /// The account's cap (0: none).
    pub cap: u32,
    /// What to do, given the stored registration.
    pub decide: Decide,
}

type Table<'t> = redb::Table<'t, &'static str, &'static [u8]>;

/// One edit inside an open write transaction: the outer error is the
/// storage's (the transaction must not commit), the inner the edit's own
/// refusal, made before anything was written.
fn apply(
    table: &mut Table<'_>,
    accounts: &mut Table<'_>,
    node: &str,
    cap: u32,
    decide: impl FnOnce(Option<&Registration>) -> Edit,
) -> Result<Result<Edit, RegistryError>, RegistryError> {
    let existing = match table
        .get(node)
        .map_err(storage)?
        .map(|v| decode(node, v.value()))
        .transpose()
    {
        Ok(existing) => existing,
        Err(corrupt) => return Ok(Err(corrupt)),
    };
    let edit = decide(existing.as_ref());
    match (&edit, &existing) {
        (Edit::Keep, _) => {}
        (Edit::Remove, old) => {
            table.remove(node).map_err(storage)?;
            if let Some(old) = old {
                accounts
                    .remove(account_node(&old.account_hash, node).as_str())
                    .map_err(storage)?;
            }
        }
        (Edit::Put(updated), old) => {
            if old.is_none() && cap > 0 {
                let held = account_range(accounts, &updated.account_hash)?;
                if held >= u64::from(cap) {
                    return Ok(Err(RegistryError::AccountFull { cap }));
                }
            }
            let bytes = match encode(updated) {
                Ok(bytes) => bytes,
                Err(e) => return Ok(Err(e)),
            };
            table.insert(node, bytes.as_slice()).map_err(storage)?;
            accounts
                .insert(
                    account_node(&updated.account_hash, node).as_str(),
                    [].as_slice(),
                )
                .map_err(storage)?;
        }
    }
    Ok(Ok(edit))
}

impl EmbeddedStore {
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

/// One outbox write: the entry stored, or removed.
fn put_outbox(
    table: &mut redb::Table<'_, &'static str, &'static [u8]>,
    write: &OutboxWrite,
) -> Result<(), RegistryError> {
    match &write.value {
        Some(value) => table.insert(write.key.as_str(), value.as_slice()),
        None => table.remove(write.key.as_str()),
    }
    .map(|_| ())
    .map_err(storage)
}

/// Creates `dir` (and its parents) readable by the owner only; an existing
/// directory is left as the operator made it.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

fn private_file(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn account_node(account_hash: &str, node: &str) -> String {
    format!("{account_hash}/{node}")
}

/// How many nodes `account_hash` holds (`/` sorts just before `0`).
fn account_range(
    accounts: &redb::Table<'_, &str, &[u8]>,
    account_hash: &str,
) -> Result<u64, RegistryError> {
    let (from, to) = (format!("{account_hash}/"), format!("{account_hash}0"));
    let mut held = 0;
    for item in accounts
        .range(from.as_str()..to.as_str())
        .map_err(storage)?
    {
        item.map_err(storage)?;
        held += 1;
    }
    Ok(held)
}

/// Puts every registration in `account_nodes` (stores from before it existed).
fn index_accounts(txn: &redb::WriteTransaction) -> Result<(), RegistryError> {
    let table = txn.open_table(REGISTRATIONS).map_err(storage)?;
    let mut accounts = txn.open_table(ACCOUNT_NODES).map_err(storage)?;
    for item in table.iter().map_err(storage)? {
        let (node, value) = item.map_err(storage)?;
        let node = node.value();
        // An unreadable record is left to the reads that report it.
        if let Ok(r) = decode(node, value.value()) {
            accounts
                .insert(account_node(&r.account_hash, node).as_str(), [].as_slice())
                .map_err(storage)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::NodeKeys;
    use crate::registry::model::NewRegistration;

    fn registration(keys: &NodeKeys, account: &str, token: &str) -> Registration {
        NewRegistration {
            account: account.into(),
            provider: "apns".into(),
            token: token.into(),
            voip_token: None,
            secret: None,
            device_id: None,
            keep_account: false,
            max_per_account: 0,
        }
        .into_registration(keys, 1)
    }

    #[cfg(unix)]
    #[test]
    fn the_store_is_the_owners_alone() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("a/data");
        EmbeddedStore::open(&data).expect("open");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join(FILE_NAME)), 0o600);
    }

    /// A store from before the account index gets one when opened, so the
    /// cap counts the registrations it already held.
    #[test]
    fn registrations_from_before_the_index_count_towards_the_cap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = NodeKeys::new([3; 32]);
        {
            let store = EmbeddedStore::open(dir.path()).expect("open");
            let old = [
                registration(&keys, "a@x", "1"),
                registration(&keys, "a@x", "2"),
            ];
            store.put_many(&old).expect("put");
            // Back to how an older version left it: no index, no marker.
            let txn = store.db.begin_write().expect("write");
            txn.delete_table(ACCOUNT_NODES).expect("drop index");
            txn.open_table(META)
                .expect("meta")
                .remove(ACCOUNTS_INDEXED)
                .expect("unmark");
            txn.commit().expect("commit");
        }
        let store = EmbeddedStore::open(dir.path()).expect("reopen");
        let third = registration(&keys, "a@x", "3");
        let put = |r: &Registration| {
            let r = r.clone();
            store.edit(&r.node.clone(), 2, move |_| Edit::Put(Box::new(r)))
        };
        assert!(matches!(
            put(&third),
            Err(RegistryError::AccountFull { cap: 2 })
        ));
        put(&registration(&keys, "b@x", "1")).expect("another account");
        let removed = store
            .edit(&registration(&keys, "a@x", "1").node, 0, |_| Edit::Remove)
            .expect("remove");
        assert_eq!(removed, Edit::Remove);
        put(&third).expect("room again");
    }
}
