//! Writing the embedded store: the group commit (committed to redb without
//! syncing, made durable by the journal), checkpoints, and the few writes
//! outside it, which are durable commits of their own.
//!
//! Outbox changes reach redb only at checkpoints: between two, the journal
//! makes them durable and [`JournalState`] holds the latest per key. Nearly
//! every entry is removed within a second of its insert (its push was
//! delivered), so a checkpoint writes what is left of a second's changes
//! instead of every insert and removal (a B-tree insert and a removal per
//! push were 8% of the gateway's CPU at full load; BENCHMARKS.md,
//! "Third round, again: less per delivery"). Nothing reads the outbox
//! table but the load at start-up (after the journal is applied) and
//! exports, which checkpoint first.

use super::{
    ACCOUNT_NODES, EmbeddedStore, OUTBOX, REGISTRATIONS, account_node, account_range, storage,
};
use crate::registry::journal::{self, Change, Frame, Journal};
use crate::registry::model::{Edit, decode, encode};
use crate::registry::{OutboxWrite, Registration, RegistryError};
use redb::{Durability, ReadableTable, WriteTransaction};
use std::collections::HashMap;
use std::sync::MutexGuard;
use std::time::Duration;

/// Longest time between checkpoints while writes come: what the journal
/// holds, and a restart after a crash applies again.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// Most journal bytes between checkpoints.
const CHECKPOINT_BYTES: u64 = 64 * 1024 * 1024;

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

/// The journal, when it was last emptied, and the outbox changes it holds
/// that redb does not have yet.
pub(super) struct JournalState {
    journal: Journal,
    checkpointed: crate::clock::Instant,
    /// Outbox changes since the last checkpoint, the latest per key (`None`:
    /// removed). Bounded by what the journal may hold between checkpoints.
    outbox: HashMap<String, Option<Vec<u8>>>,
}

impl JournalState {
    pub(super) fn new(journal: Journal) -> Self {
        Self {
            journal,
            checkpointed: crate::clock::now(),
            outbox: HashMap::new(),
        }
    }
}

impl EmbeddedStore {
    fn journal(&self) -> MutexGuard<'_, JournalState> {
        // A panic elsewhere with the lock held leaves nothing half-done that
        // the next writer could trip on: the journal's length only moves
        // after a whole append.
        self.journal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies outbox flushes (each in order, one after the other) and
    /// registration `jobs` (the group commit of
    /// [`crate::registry::writer::Writer`]), durable when this returns `Ok`:
    /// every change appended to the journal with one sync, the jobs'
    /// committed to redb without one (reads see them at once), the
    /// outbox's kept for the next checkpoint. Each job sees the ones before
    /// it, as if run one after the other. A job refused (a full account, a
    /// corrupt value) fails alone; a storage failure fails all.
    pub(crate) fn write_many(
        &self,
        flushes: &[std::sync::Arc<[OutboxWrite]>],
        jobs: Vec<EditJob>,
    ) -> Result<Vec<Result<Edit, RegistryError>>, RegistryError> {
        let mut state = self.journal();
        let mut frame = Frame::default();
        let results = if jobs.is_empty() {
            Vec::new()
        } else {
            self.apply_jobs(jobs, &mut frame)?
        };
        for write in flushes.iter().flat_map(|f| f.iter()) {
            match &write.value {
                Some(value) => frame.put(journal::Table::Outbox, &write.key, value),
                None => frame.remove(journal::Table::Outbox, &write.key),
            }
            // Kept before the append: should it fail, the checkpoint below
            // writes them to redb.
            state.outbox.insert(write.key.clone(), write.value.clone());
        }
        if frame.is_empty() {
            return Ok(results);
        }
        if let Err(e) = state.journal.append(&frame) {
            // What was committed is in redb, not yet durable, and the
            // outbox's changes not even there: a durable commit now makes
            // them so (and empties the journal), or every caller hears that
            // it failed.
            tracing::warn!(
                "the embedded store's journal could not be written ({}); committing to the database instead",
                crate::errors::chain(&e)
            );
            self.checkpoint_locked(&mut state)?;
        }
        Ok(results)
    }

    /// Registration `jobs` in one write transaction, committed without a
    /// sync when they changed anything; their changes recorded in `frame`.
    fn apply_jobs(
        &self,
        jobs: Vec<EditJob>,
        frame: &mut Frame,
    ) -> Result<Vec<Result<Edit, RegistryError>>, RegistryError> {
        let mut txn = self.db.begin_write().map_err(storage)?;
        txn.set_durability(Durability::None).map_err(storage)?;
        let results = {
            let mut table = txn.open_table(REGISTRATIONS).map_err(storage)?;
            let mut accounts = txn.open_table(ACCOUNT_NODES).map_err(storage)?;
            let mut tables = Recording {
                table: &mut table,
                accounts: &mut accounts,
                frame,
            };
            let mut results = Vec::with_capacity(jobs.len());
            for job in jobs {
                results.push(apply(&mut tables, &job.node, job.cap, job.decide)?);
            }
            results
        };
        if frame.is_empty() {
            txn.abort().map_err(storage)?;
        } else {
            txn.commit().map_err(storage)?;
        }
        Ok(results)
    }

    /// A checkpoint if one is due: redb commits durably and the journal is
    /// emptied. Called by the writer after answering a batch; a failure is
    /// logged and tried again after the next batch (the journal still
    /// holds everything).
    pub(crate) fn checkpoint_if_due(&self) {
        let mut state = self.journal();
        let due = state.journal.len() >= CHECKPOINT_BYTES
            || (state.journal.len() > 0
                && crate::clock::now() - state.checkpointed >= CHECKPOINT_INTERVAL);
        if due && let Err(e) = self.checkpoint_locked(&mut state) {
            tracing::warn!(
                "checkpoint of the embedded store failed: {}",
                crate::errors::chain(&e)
            );
        }
    }

    /// A checkpoint now, whatever the journal holds (the writer stopping).
    pub(crate) fn checkpoint(&self) -> Result<(), RegistryError> {
        let mut state = self.journal();
        self.checkpoint_locked(&mut state)
    }

    /// `read` after a checkpoint, with the journal's lock held: it sees
    /// every outbox change made so far and none lands meanwhile.
    pub(super) fn checkpointed<T>(
        &self,
        read: impl FnOnce(&Self) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let mut state = self.journal();
        self.checkpoint_locked(&mut state)?;
        read(self)
    }

    fn checkpoint_locked(&self, state: &mut JournalState) -> Result<(), RegistryError> {
        // A durable commit makes every earlier one durable with it.
        self.commit_durably(state, |_| Ok(()))
    }

    /// Runs `write` in a durable transaction of its own, outside the group
    /// commit (the deployment key, imports). It makes the group commits
    /// before it durable too, so the journal is emptied after it: applying
    /// those frames again after a crash could undo what `write` wrote.
    pub(super) fn write_durably<T>(
        &self,
        write: impl FnOnce(&WriteTransaction) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let mut state = self.journal();
        self.commit_durably(&mut state, write)
    }

    /// `write` in a durable transaction, then the journal emptied: what it
    /// held is in the database now.
    fn commit_durably<T>(
        &self,
        state: &mut JournalState,
        write: impl FnOnce(&WriteTransaction) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let txn = self.db.begin_write().map_err(storage)?;
        if !state.outbox.is_empty() {
            let mut table = txn.open_table(OUTBOX).map_err(storage)?;
            for (key, value) in &state.outbox {
                set(&mut table, key, value.as_deref())?;
            }
        }
        let out = write(&txn)?;
        txn.commit().map_err(storage)?;
        state.outbox.clear();
        state.journal.reset().map_err(RegistryError::Journal)?;
        state.checkpointed = crate::clock::now();
        Ok(out)
    }
}

/// Applies the changes a journal held (after a crash) in `txn`, each table
/// opened once.
pub(super) fn replay(txn: &WriteTransaction, changes: Vec<Change>) -> Result<(), RegistryError> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut registrations = txn.open_table(REGISTRATIONS).map_err(storage)?;
    let mut accounts = txn.open_table(ACCOUNT_NODES).map_err(storage)?;
    let mut outbox = txn.open_table(OUTBOX).map_err(storage)?;
    for change in changes {
        let table = match change.table {
            journal::Table::Registrations => &mut registrations,
            journal::Table::AccountNodes => &mut accounts,
            journal::Table::Outbox => &mut outbox,
        };
        set(table, &change.key, change.value.as_deref())?;
    }
    Ok(())
}

/// Stores `value` under `key`, or removes `key` for `None`.
fn set(table: &mut Table<'_>, key: &str, value: Option<&[u8]>) -> Result<(), RegistryError> {
    match value {
        Some(value) => table.insert(key, value),
        None => table.remove(key),
    }
    .map_err(storage)?;
    Ok(())
}

/// The registration tables of a group commit, and the frame each change
/// made to them is recorded in.
struct Recording<'a, 't> {
    table: &'a mut Table<'t>,
    accounts: &'a mut Table<'t>,
    frame: &'a mut Frame,
}

impl Recording<'_, '_> {
    fn put_registration(&mut self, node: &str, bytes: &[u8]) -> Result<(), RegistryError> {
        self.table.insert(node, bytes).map_err(storage)?;
        self.frame.put(journal::Table::Registrations, node, bytes);
        Ok(())
    }

    fn remove_registration(&mut self, node: &str) -> Result<(), RegistryError> {
        self.table.remove(node).map_err(storage)?;
        self.frame.remove(journal::Table::Registrations, node);
        Ok(())
    }

    fn account_node(&mut self, key: &str, present: bool) -> Result<(), RegistryError> {
        if present {
            self.accounts.insert(key, [].as_slice()).map_err(storage)?;
            self.frame.put(journal::Table::AccountNodes, key, &[]);
        } else {
            self.accounts.remove(key).map_err(storage)?;
            self.frame.remove(journal::Table::AccountNodes, key);
        }
        Ok(())
    }
}

/// One edit inside an open write transaction: the outer error is the
/// storage's (the transaction must not commit), the inner the edit's own
/// refusal, made before anything was written.
fn apply(
    tables: &mut Recording<'_, '_>,
    node: &str,
    cap: u32,
    decide: impl FnOnce(Option<&Registration>) -> Edit,
) -> Result<Result<Edit, RegistryError>, RegistryError> {
    let existing = match tables
        .table
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
            tables.remove_registration(node)?;
            if let Some(old) = old {
                tables.account_node(&account_node(&old.account_hash, node), false)?;
            }
        }
        (Edit::Put(updated), old) => {
            if old.is_none() && cap > 0 {
                let held = account_range(tables.accounts, &updated.account_hash)?;
                if held >= u64::from(cap) {
                    return Ok(Err(RegistryError::AccountFull { cap }));
                }
            }
            let bytes = match encode(updated) {
                Ok(bytes) => bytes,
                Err(e) => return Ok(Err(e)),
            };
            tables.put_registration(node, &bytes)?;
            tables.account_node(&account_node(&updated.account_hash, node), true)?;
        }
    }
    Ok(Ok(edit))
}
