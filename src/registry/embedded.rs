//! The embedded backend: one redb file, durable on every commit.

use super::{OutboxWrite, Registration, RegistryError};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::path::Path;

const REGISTRATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("registrations");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const OUTBOX: TableDefinition<&str, &[u8]> = TableDefinition::new("outbox");
const DEPLOYMENT_KEY: &str = "deployment_key";
const FILE_NAME: &str = "pushgate.redb";

/// What [`EmbeddedStore::edit`] does to a registration.
enum Edit {
    Keep,
    Remove,
    Replace(Box<Registration>),
}

/// Registrations in a redb database under a directory.
pub struct EmbeddedStore {
    db: Database,
}

fn storage<E: std::fmt::Display>(e: E) -> RegistryError {
    RegistryError::Storage(e.to_string())
}

impl EmbeddedStore {
    /// Opens or creates `dir/pushgate.redb`. Fails clearly when another process
    /// has it open.
    pub fn open(dir: &Path) -> Result<Self, RegistryError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            RegistryError::Storage(format!(
                "cannot create store directory {}: {e}",
                dir.display()
            ))
        })?;
        let path = dir.join(FILE_NAME);
        let db = Database::create(&path)
            .map_err(|e| RegistryError::Storage(format!("cannot open {}: {e}", path.display())))?;
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
    pub fn deployment_key(&self) -> Result<[u8; 32], RegistryError> {
        let txn = self.db.begin_write().map_err(storage)?;
        let key = {
            let mut meta = txn.open_table(META).map_err(storage)?;
            let existing = meta
                .get(DEPLOYMENT_KEY)
                .map_err(storage)?
                .map(|v| v.value().to_vec());
            match existing {
                Some(bytes) => <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                    RegistryError::Storage("deployment key has the wrong length".into())
                })?,
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

    /// Inserts `registration`, or refreshes the existing one of the same node
    /// (keeping its creation time).
    pub fn upsert(&self, mut registration: Registration) -> Result<Registration, RegistryError> {
        let txn = self.db.begin_write().map_err(storage)?;
        {
            let mut table = txn.open_table(REGISTRATIONS).map_err(storage)?;
            let existing = table
                .get(registration.node.as_str())
                .map_err(storage)?
                .map(|v| decode(&registration.node, v.value()))
                .transpose()?;
            if let Some(old) = existing {
                registration.created_ms = old.created_ms;
                registration.updated_ms = registration.updated_ms.max(old.updated_ms);
            }
            let bytes = encode(&registration)?;
            table
                .insert(registration.node.as_str(), bytes.as_slice())
                .map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        Ok(registration)
    }

    /// The registration of `node`.
    pub fn get(&self, node: &str) -> Result<Option<Registration>, RegistryError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(REGISTRATIONS).map_err(storage)?;
        let value = table.get(node).map_err(storage)?;
        value.map(|v| decode(node, v.value())).transpose()
    }

    /// Removes `node` if it exists and `should_remove` says so; true if removed.
    pub fn remove_if(
        &self,
        node: &str,
        should_remove: impl FnOnce(&Registration) -> bool,
    ) -> Result<bool, RegistryError> {
        self.edit(node, |r| {
            if should_remove(r) {
                Edit::Remove
            } else {
                Edit::Keep
            }
        })
    }

    /// Applies `change` to the registration of `node` in one transaction, if it
    /// exists: `Some(r)` stores `r`, `None` leaves it. True if something changed.
    pub fn update_if(
        &self,
        node: &str,
        change: impl FnOnce(&Registration) -> Option<Registration>,
    ) -> Result<bool, RegistryError> {
        self.edit(node, |r| {
            change(r).map_or(Edit::Keep, |u| Edit::Replace(Box::new(u)))
        })
    }

    /// Reads `node` and applies what `decide` says in one write transaction;
    /// true if the store changed.
    fn edit(
        &self,
        node: &str,
        decide: impl FnOnce(&Registration) -> Edit,
    ) -> Result<bool, RegistryError> {
        let txn = self.db.begin_write().map_err(storage)?;
        let changed = {
            let mut table = txn.open_table(REGISTRATIONS).map_err(storage)?;
            let existing = table
                .get(node)
                .map_err(storage)?
                .map(|v| decode(node, v.value()))
                .transpose()?;
            match existing.as_ref().map_or(Edit::Keep, decide) {
                Edit::Keep => false,
                Edit::Remove => {
                    table.remove(node).map_err(storage)?;
                    true
                }
                Edit::Replace(updated) => {
                    let bytes = encode(&updated)?;
                    table.insert(node, bytes.as_slice()).map_err(storage)?;
                    true
                }
            }
        };
        if changed {
            txn.commit().map_err(storage)?;
        } else {
            txn.abort().map_err(storage)?;
        }
        Ok(changed)
    }

    /// Number of registrations.
    pub fn count(&self) -> Result<u64, RegistryError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(REGISTRATIONS).map_err(storage)?;
        table.len().map_err(storage)
    }
}

impl EmbeddedStore {
    /// Applies outbox writes in order, in one durable transaction: the group
    /// commit that lets many publishes share one fsync.
    pub fn outbox_apply(&self, writes: &[OutboxWrite]) -> Result<(), RegistryError> {
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
    pub fn outbox_load(&self) -> Result<Vec<(String, Vec<u8>)>, RegistryError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(OUTBOX).map_err(storage)?;
        let mut entries = Vec::new();
        for item in table.iter().map_err(storage)? {
            let (key, value) = item.map_err(storage)?;
            entries.push((key.value().to_owned(), value.value().to_vec()));
        }
        Ok(entries)
    }
}

fn encode(r: &Registration) -> Result<Vec<u8>, RegistryError> {
    serde_json::to_vec(r).map_err(storage)
}

fn decode(node: &str, bytes: &[u8]) -> Result<Registration, RegistryError> {
    serde_json::from_slice(bytes).map_err(|e| RegistryError::Corrupt {
        node: node.to_owned(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::{DeadToken, DeviceRef, NewRegistration, OutboxWrite, Registry};

    fn new(token: &str) -> NewRegistration {
        NewRegistration {
            account: "alice@example.com".into(),
            provider: "apns".into(),
            token: token.into(),
            voip_token: None,
            secret: None,
            device_id: None,
            keep_account: false,
        }
    }

    #[tokio::test]
    async fn outbox_writes_apply_in_order_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reg = Registry::open_embedded(dir.path()).expect("open");
        let put = |k: &str, v: &str| OutboxWrite {
            key: k.into(),
            value: Some(v.as_bytes().to_vec()),
        };
        let delete = |k: &str| OutboxWrite {
            key: k.into(),
            value: None,
        };
        reg.outbox_apply(vec![put("a", "1"), put("b", "1"), put("a", "2"), delete("b")].into())
            .await
            .expect("apply");
        drop(reg);
        let reg = Registry::open_embedded(dir.path()).expect("reopen");
        let entries = reg.outbox_load().await.expect("load");
        assert_eq!(entries, [("a".to_owned(), b"2".to_vec())]);
    }

    #[tokio::test]
    async fn register_is_idempotent_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reg = Registry::open_embedded(dir.path()).expect("open");
        let a = reg.register(new("aa")).await.expect("register");
        let again = reg.register(new("aa")).await.expect("register again");
        assert_eq!(a.node, again.node);
        assert_eq!(a.created_ms, again.created_ms);
        assert_eq!(reg.count().await.expect("count"), 1);
        drop(reg);
        let reopened = Registry::open_embedded(dir.path()).expect("reopen");
        let found = reopened.get(&a.node).await.expect("get").expect("present");
        assert_eq!(found.token, "aa");
        assert_eq!(reopened.register(new("aa")).await.expect("r").node, a.node);
    }

    #[tokio::test]
    async fn unregister_and_dead_token_guard() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reg = Registry::open_embedded(dir.path()).expect("open");
        let a = reg.register(new("aa")).await.expect("register");
        // Renewed after the token was reported dead: kept.
        assert!(
            reg.drop_dead_token(&a.node, "aa", Some(a.updated_ms - 1))
                .await
                .expect("guard")
                == DeadToken::Kept
        );
        // A different token on the node: kept.
        assert!(
            reg.drop_dead_token(&a.node, "bb", None)
                .await
                .expect("token")
                == DeadToken::Kept
        );
        assert!(
            reg.drop_dead_token(&a.node, "aa", Some(a.updated_ms + 1))
                .await
                .expect("remove")
                == DeadToken::Removed
        );
        assert!(reg.get(&a.node).await.expect("get").is_none());
        let b = reg.register(new("bb")).await.expect("register");
        let device = DeviceRef {
            account: "alice@example.com",
            provider: "apns",
            identity: "bb",
        };
        assert!(reg.unregister(&device).await.expect("unregister"));
        assert!(!reg.unregister(&device).await.expect("twice"));
        assert!(reg.get(&b.node).await.expect("get").is_none());
    }

    #[tokio::test]
    async fn a_dead_voip_token_is_forgotten_and_the_registration_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reg = Registry::open_embedded(dir.path()).expect("open");
        let mut with_voip = new("aa");
        with_voip.voip_token = Some("vv".into());
        let a = reg.register(with_voip).await.expect("register");
        assert_eq!(
            reg.drop_dead_token(&a.node, "vv", Some(a.updated_ms - 1))
                .await
                .expect("guard"),
            DeadToken::Kept,
            "renewed after it was reported dead"
        );
        assert_eq!(
            reg.drop_dead_token(&a.node, "vv", None)
                .await
                .expect("voip"),
            DeadToken::VoipTokenForgotten
        );
        let kept = reg
            .get(&a.node)
            .await
            .expect("get")
            .expect("still registered");
        assert_eq!((kept.token.as_str(), kept.voip_token), ("aa", None));
    }
}
