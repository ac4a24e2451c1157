//! The embedded backend: one redb file, and the journal that makes its
//! group commits durable (`commit`, `super::journal`).

mod commit;

pub(crate) use commit::EditJob;

use super::journal::Journal;
use super::model::{decode, encode};
use super::{Registration, RegistryError};
use commit::JournalState;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::path::Path;
use std::sync::Mutex;

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
const JOURNAL_NAME: &str = "pushgate.journal";

/// Registrations in a redb database under a directory.
pub(crate) struct EmbeddedStore {
    db: Database,
    /// Held for every write transaction, so the journal and the
    /// transactions stay in the same order.
    journal: Mutex<JournalState>,
}

fn storage(e: impl Into<redb::Error>) -> RegistryError {
    RegistryError::Embedded(e.into())
}

/// redb's page cache. Its default (1 GiB) would make the gateway's memory grow
/// with the registry; pages beyond this are read again through the kernel's
/// page cache, which costs a system call, not a disk read, on a warm machine.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

impl EmbeddedStore {
    /// Opens or creates `dir/pushgate.redb` and its journal, applying what
    /// the journal holds (a crash since the last checkpoint). Fails clearly
    /// when another process has the database open.
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
        let journal_path = dir.join(JOURNAL_NAME);
        let open_error = |e: std::io::Error| RegistryError::Open {
            path: journal_path.clone(),
            source: e.into(),
        };
        let (mut journal, changes) = Journal::open(&journal_path).map_err(open_error)?;
        private_file(&journal_path).map_err(open_error)?;
        // What the last run committed after its last checkpoint.
        commit::replay(&txn, changes)?;
        txn.commit().map_err(storage)?;
        journal.reset().map_err(open_error)?;
        Ok(Self {
            db,
            journal: Mutex::new(JournalState::new(journal)),
        })
    }

    /// The deployment key, created at random on first use and kept forever: node
    /// ids depend on it.
    pub(crate) fn deployment_key(&self) -> Result<[u8; 32], RegistryError> {
        self.write_durably(|txn| {
            let mut meta = txn.open_table(META).map_err(storage)?;
            let existing = meta
                .get(DEPLOYMENT_KEY)
                .map_err(storage)?
                .map(|v| v.value().to_vec());
            match existing {
                Some(bytes) => <[u8; 32]>::try_from(bytes.as_slice())
                    .map_err(|_| RegistryError::BadDeploymentKey),
                None => {
                    let key: [u8; 32] = rand::random();
                    meta.insert(DEPLOYMENT_KEY, key.as_slice())
                        .map_err(storage)?;
                    Ok(key)
                }
            }
        })
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
        decide: impl FnOnce(Option<&Registration>) -> super::model::Edit + Send + 'static,
    ) -> Result<super::model::Edit, RegistryError> {
        let job = EditJob {
            node: node.to_owned(),
            cap,
            decide: Box::new(decide),
        };
        self.write_many(&[], vec![job])?
            .pop()
            .unwrap_or(Err(RegistryError::NotStored))
    }

    /// Writes registrations as they are, in one transaction (import).
    pub(crate) fn put_many(&self, registrations: &[Registration]) -> Result<(), RegistryError> {
        self.write_durably(|txn| {
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
            Ok(())
        })
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
        self.write_durably(|txn| {
            let mut meta = txn.open_table(META).map_err(storage)?;
            meta.insert(DEPLOYMENT_KEY, key.as_slice())
                .map_err(storage)?;
            Ok(())
        })
    }

    /// Number of registrations.
    pub(crate) fn count(&self) -> Result<u64, RegistryError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(REGISTRATIONS).map_err(storage)?;
        table.len().map_err(storage)
    }
}

impl EmbeddedStore {
    /// Every outbox entry, as stored. Outbox changes reach the table at
    /// checkpoints, so one comes first (under the journal's lock, so no
    /// change lands between it and the read).
    pub(crate) fn outbox_load(&self) -> Result<Vec<(String, Vec<u8>)>, RegistryError> {
        self.checkpointed(|store| store.all(OUTBOX))
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
    use crate::registry::model::Edit;
    use crate::registry::model::NewRegistration;
    use crate::registry::{NodeKeys, OutboxWrite};

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
        assert_eq!(mode(&data.join(JOURNAL_NAME)), 0o600);
    }

    /// A new directory holding copies of `names` from `dir`, as they are now.
    fn copy_of(dir: &Path, names: &[&str]) -> tempfile::TempDir {
        let copy = tempfile::tempdir().expect("tempdir");
        for name in names {
            std::fs::copy(dir.join(name), copy.path().join(name)).expect("copy");
        }
        copy
    }

    /// A group commit is durable through the journal alone: the database
    /// file as a crash leaves it (at its last durable commit) and the
    /// journal hold everything acknowledged, registrations, their account
    /// index and outbox entries alike.
    #[test]
    fn what_the_journal_holds_survives_a_crash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        let keys = NodeKeys::new(store.deployment_key().expect("key"));
        let first = registration(&keys, "a@x", "1");
        let put = |store: &EmbeddedStore, r: &Registration| {
            let r = r.clone();
            store.edit(&r.node.clone(), 2, move |_| Edit::Put(Box::new(r)))
        };
        put(&store, &first).expect("put");
        let entry = OutboxWrite {
            key: format!("{}/1", first.node),
            value: Some(b"entry".to_vec()),
        };
        store
            .write_many(&[std::sync::Arc::from([entry.clone()])], Vec::new())
            .expect("outbox");
        // The files as they are now are what a crash would leave.
        let crashed = copy_of(dir.path(), &[FILE_NAME, JOURNAL_NAME]);
        let bare = copy_of(dir.path(), &[FILE_NAME]);
        drop(store);

        // The database file alone does not have them: the journal does.
        let without = EmbeddedStore::open(bare.path()).expect("open the bare file");
        assert_eq!(without.get(&first.node).expect("get"), None);
        assert!(without.outbox_load().expect("outbox").is_empty());

        let store = EmbeddedStore::open(crashed.path()).expect("reopen after the crash");
        assert_eq!(store.get(&first.node).expect("get"), Some(first.clone()));
        assert_eq!(
            store.outbox_load().expect("outbox"),
            vec![(entry.key, b"entry".to_vec())]
        );
        let journal = std::fs::metadata(crashed.path().join(JOURNAL_NAME)).expect("journal");
        assert_eq!(journal.len(), 0, "applied, then emptied");
        // The account index came back too: the cap of 2 counts the first.
        put(&store, &registration(&keys, "a@x", "2")).expect("second");
        assert!(matches!(
            put(&store, &registration(&keys, "a@x", "3")),
            Err(RegistryError::AccountFull { cap: 2 })
        ));
    }

    /// A checkpoint makes the database file hold everything, and empties the
    /// journal.
    #[test]
    fn a_checkpoint_empties_the_journal_into_the_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        let keys = NodeKeys::new(store.deployment_key().expect("key"));
        let r = registration(&keys, "a@x", "1");
        let node = r.node.clone();
        store
            .edit(&node, 0, move |_| Edit::Put(Box::new(r)))
            .expect("put");
        let journal = || {
            std::fs::metadata(dir.path().join(JOURNAL_NAME))
                .expect("journal")
                .len()
        };
        assert!(journal() > 0);
        store.checkpoint().expect("checkpoint");
        assert_eq!(journal(), 0);
        let bare = copy_of(dir.path(), &[FILE_NAME]);
        let copy = EmbeddedStore::open(bare.path()).expect("open the copy");
        assert!(copy.get(&node).expect("get").is_some());
    }

    /// Outbox changes reach the database file at checkpoints, as what is
    /// left of them: an entry inserted and removed in between never does,
    /// and one stored at an earlier checkpoint is removed at the next.
    #[test]
    fn outbox_changes_reach_the_database_at_checkpoints() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        let write = |key: &str, value: Option<&[u8]>| {
            let write = OutboxWrite {
                key: key.into(),
                value: value.map(<[u8]>::to_vec),
            };
            store
                .write_many(&[std::sync::Arc::from([write])], Vec::new())
                .expect("outbox");
        };
        let in_file = |dir: &Path| {
            let bare = copy_of(dir, &[FILE_NAME]);
            let copy = EmbeddedStore::open(bare.path()).expect("open the copy");
            copy.all(OUTBOX).expect("outbox")
        };
        write("kept", Some(b"1"));
        write("gone", Some(b"2"));
        write("gone", None);
        write("kept", Some(b"3"));
        assert!(in_file(dir.path()).is_empty(), "not before a checkpoint");
        assert_eq!(store.all(OUTBOX).expect("table"), [], "nor in redb");
        let loaded = store.outbox_load().expect("load");
        assert_eq!(loaded, [("kept".to_owned(), b"3".to_vec())]);
        assert_eq!(in_file(dir.path()), loaded, "the load checkpointed first");

        write("kept", None);
        write("new", Some(b"4"));
        store.checkpoint().expect("checkpoint");
        assert_eq!(in_file(dir.path()), [("new".to_owned(), b"4".to_vec())]);
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
