//! The embedded store's writer: one thread applying every registration
//! edit and outbox flush, as many as are waiting in one transaction and one
//! fsync (the journal's, `super::journal`; the database's own come with the
//! checkpoints this thread makes between batches). A command is answered
//! only after its edit is durable, a publish after its outbox flush; what
//! changes is that what arrives while a commit runs shares the next one,
//! instead of each paying an fsync of its own: the providers' pools flush
//! their outboxes independently, and at a moderate rate each flush was a
//! commit of its own (BENCHMARKS.md, "A moderate rate: fewer commits,
//! smaller futures"). A commit starts at most every
//! [`MIN_COMMIT_INTERVAL`]; a lone job after a quiet moment is committed at
//! once: nothing waits for a batch to fill.

use super::embedded::{EditJob, EmbeddedStore};
use super::model::Edit;
use super::{OutboxWrite, RegistryError};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Edits in one transaction at most.
const MAX_BATCH: usize = 512;
/// Edits waiting at most; past it, callers wait for room.
const QUEUE: usize = 4096;
/// Shortest time between the starts of two commits.
const MIN_COMMIT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(2);

enum Job {
    Edit {
        edit: EditJob,
        done: oneshot::Sender<Result<Edit, RegistryError>>,
    },
    Outbox {
        writes: Arc<[OutboxWrite]>,
        done: oneshot::Sender<Result<(), RegistryError>>,
    },
}

/// The writer thread and the way to it. Dropping it lets the thread finish
/// what is queued and waits for it, so the database is closed when the
/// registry is gone (a test reopening the directory finds it free).
pub(crate) struct Writer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer of `store`.
    pub(crate) fn start(store: Arc<EmbeddedStore>) -> Result<Self, RegistryError> {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("registry-writer".into())
            .spawn(move || run(&store, queue))
            .map_err(|_| RegistryError::Stopped)?;
        Ok(Self {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Applies `edit` in the next commit; resolves once it is durable.
    pub(crate) async fn edit(&self, edit: EditJob) -> Result<Edit, RegistryError> {
        self.submit(|done| Job::Edit { edit, done }).await
    }

    /// Applies outbox `writes`, in order, in the next commit; resolves once
    /// they are durable.
    pub(crate) async fn outbox(&self, writes: Arc<[OutboxWrite]>) -> Result<(), RegistryError> {
        self.submit(|done| Job::Outbox { writes, done }).await
    }

    /// Queues the job `make` builds around its answer, and waits for it.
    async fn submit<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, RegistryError>>) -> Job,
    ) -> Result<T, RegistryError> {
        let jobs = self.jobs.as_ref().ok_or(RegistryError::Stopped)?;
        let (done, answer) = oneshot::channel();
        jobs.send(make(done))
            .await
            .map_err(|_| RegistryError::Stopped)?;
        answer.await.map_err(|_| RegistryError::Stopped)?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Takes what is waiting (at least one), applies it in one transaction,
/// answers each; until every sender is gone.
fn run(store: &EmbeddedStore, mut queue: mpsc::Receiver<Job>) {
    let mut last_commit: Option<crate::clock::Instant> = None;
    while let Some(first) = queue.blocking_recv() {
        // The pools pace their own flushes, but not together: waiting out
        // the interval here lets theirs (and registrations) share a commit.
        // (This thread has no runtime: the clock is the real one.)
        let since = last_commit.map(|t| crate::clock::now() - t);
        if let Some(wait) = since.and_then(|s| MIN_COMMIT_INTERVAL.checked_sub(s)) {
            std::thread::sleep(wait);
        }
        last_commit = Some(crate::clock::now());
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (mut edits, mut answers) = (Vec::new(), Vec::new());
        let (mut flushes, mut flushed) = (Vec::new(), Vec::new());
        for job in batch {
            match job {
                Job::Edit { edit, done } => {
                    edits.push(edit);
                    answers.push(done);
                }
                Job::Outbox { writes, done } => {
                    flushes.push(writes);
                    flushed.push(done);
                }
            }
        }
        match store.write_many(&flushes, edits) {
            Ok(results) => {
                for (answer, result) in answers.into_iter().zip(results) {
                    let _ = answer.send(result);
                }
                for done in flushed {
                    let _ = done.send(Ok(()));
                }
            }
            Err(e) => {
                // Nothing of the batch was committed: each caller hears why.
                let shared = Arc::new(e);
                for answer in answers {
                    let _ = answer.send(Err(RegistryError::Batch(shared.clone())));
                }
                for done in flushed {
                    let _ = done.send(Err(RegistryError::Batch(shared.clone())));
                }
            }
        }
        // After the answers, so this batch's callers do not wait for it
        // (the next batch does): a checkpoint writes out what a second of
        // commits dirtied.
        store.checkpoint_if_due();
    }
    // Stopping: nothing left for a restart to apply again.
    if let Err(e) = store.checkpoint() {
        tracing::warn!(
            "the embedded store's last checkpoint failed (its journal is applied at the next start): {}",
            crate::errors::chain(&e)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::model::Registration;

    fn put(node: &str, account: &str, cap: u32) -> EditJob {
        let r = Registration::sample(node, account);
        EditJob {
            node: node.to_owned(),
            cap,
            decide: Box::new(move |_| Edit::Put(Box::new(r))),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_edits_are_each_applied_and_answered_as_if_one_by_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(EmbeddedStore::open(dir.path()).expect("open"));
        let writer = Arc::new(Writer::start(store.clone()).expect("writer"));
        // 300 accounts at once, and one account past its cap of 2.
        let mut tasks = Vec::new();
        for i in 0..300 {
            let w = writer.clone();
            tasks.push(tokio::spawn(async move {
                w.edit(put(&format!("n{i}"), &format!("a{i}"), 2)).await
            }));
        }
        for i in 0..4 {
            let w = writer.clone();
            tasks.push(tokio::spawn(async move {
                w.edit(put(&format!("full{i}"), "crowded", 2)).await
            }));
        }
        let mut stored = 0;
        let mut refused = 0;
        for t in tasks {
            match t.await.expect("task") {
                Ok(Edit::Put(_)) => stored += 1,
                Err(RegistryError::AccountFull { cap: 2 }) => refused += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!((stored, refused), (302, 2));
        assert_eq!(store.count().expect("count"), 302);
        // Durable: the database closes with the writer and reopens with all.
        drop(writer);
        drop(store);
        let reopened = EmbeddedStore::open(dir.path()).expect("reopen");
        assert_eq!(reopened.count().expect("count"), 302);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn outbox_flushes_and_edits_share_commits_each_flush_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(EmbeddedStore::open(dir.path()).expect("open"));
        let writer = Arc::new(Writer::start(store.clone()).expect("writer"));
        let write = |key: String, value: Option<&[u8]>| OutboxWrite {
            key,
            value: value.map(<[u8]>::to_vec),
        };
        let mut flushes = Vec::new();
        let mut edits = Vec::new();
        for i in 0..100 {
            // Stored, then (for even i) removed by the same flush.
            let key = format!("n{i}|1");
            let mut writes = vec![write(key.clone(), Some(b"entry".as_slice()))];
            if i % 2 == 0 {
                writes.push(write(key, None));
            }
            let w = writer.clone();
            flushes.push(tokio::spawn(async move { w.outbox(writes.into()).await }));
            let w = writer.clone();
            edits.push(tokio::spawn(async move {
                w.edit(put(&format!("r{i}"), &format!("a{i}"), 2)).await
            }));
        }
        for f in flushes {
            f.await.expect("task").expect("flushed");
        }
        for e in edits {
            assert!(matches!(e.await.expect("task"), Ok(Edit::Put(_))));
        }
        drop(writer);
        drop(store);
        let reopened = EmbeddedStore::open(dir.path()).expect("reopen");
        let mut left: Vec<String> = reopened
            .outbox_load()
            .expect("load")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        left.sort();
        let mut odd: Vec<String> = (1..100).step_by(2).map(|i| format!("n{i}|1")).collect();
        odd.sort();
        assert_eq!(left, odd, "durable, and each flush applied in order");
        assert_eq!(reopened.count().expect("count"), 100);
    }

    #[test]
    fn a_batch_sees_its_own_earlier_edits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        let first = put("n", "a", 0);
        let second = EditJob {
            node: "n".into(),
            cap: 0,
            decide: Box::new(|old| match old {
                Some(_) => Edit::Remove,
                None => Edit::Keep,
            }),
        };
        let results = store.write_many(&[], vec![first, second]).expect("batch");
        assert!(matches!(
            results.as_slice(),
            [Ok(Edit::Put(_)), Ok(Edit::Remove)]
        ));
        assert_eq!(store.count().expect("count"), 0);
    }
}
