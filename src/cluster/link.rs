//! The forwarding stream to one peer: a long-lived `Forward` call whose
//! request side carries batches of stanzas and whose response side brings
//! their results back by id. Callers queue an item and wait for its result;
//! a task on the cluster runtime sends whatever has queued up as one batch
//! and hands each result to its waiter. When the stream ends, every waiter
//! learns so (and answers `wait`); the next forward opens a new one.
//!
//! Results are handed back to their waiters' threads together: waking a
//! task on another thread's runtime writes to that runtime's eventfd, and
//! one write per result (several per results message, each waking a
//! session thread that may have just gone idle) took 3% of the cluster
//! thread's samples in that system call alone (BENCHMARKS.md, "Forwarding:
//! results handed over per thread"). Each session thread has an inbox, a
//! task on its own runtime: the cluster thread sends it every result of a
//! message meant for its waiters at once, and the inbox wakes them locally
//! (a thread's lone result still goes straight to its waiter).

use super::rpc::pb::cluster_client::ClusterClient;
use super::rpc::pb::{ForwardBatch, ForwardItem, ForwardReply, ForwardResult};
use prost::Message;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tracing::warn;

/// Items queued for one peer at most; past that a forward is refused at once.
const QUEUE: usize = 8192;
/// Most items sent in one message.
const MAX_BATCH: usize = 512;
/// Most bytes of items in one message, well under gRPC's default 4 MiB
/// limit on a received message (one stanza may be up to `max_stanza_bytes`).
const MAX_BATCH_BYTES: usize = 1 << 20;

type Waiters = Arc<Mutex<HashMap<u64, Waiter>>>;

/// Results for waiters of one thread, handed over in one message.
type Handoff = Vec<(oneshot::Sender<ForwardReply>, ForwardReply)>;

/// Where an item's result goes.
struct Waiter {
    reply: oneshot::Sender<ForwardReply>,
    /// The inbox of the thread that waits; none off a runtime (the result
    /// is then sent straight to the waiter).
    inbox: Option<mpsc::UnboundedSender<Handoff>>,
}

thread_local! {
    /// This thread's inbox, made by its first forward.
    static INBOX: RefCell<Option<mpsc::UnboundedSender<Handoff>>> = const { RefCell::new(None) };
}

/// This thread's inbox: a task on the runtime the caller runs on, which on
/// a session thread (a single-threaded runtime) is this thread. It is
/// unbounded, yet holds at most the results of items waited for, which
/// each link bounds. Made again if its runtime has gone (a test's runtime
/// ended and another now runs on the thread).
fn inbox() -> Option<mpsc::UnboundedSender<Handoff>> {
    INBOX.with(|cell| {
        let mut cell = cell.borrow_mut();
        if let Some(inbox) = cell.as_ref().filter(|i| !i.is_closed()) {
            return Some(inbox.clone());
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (inbox, mut handoffs) = mpsc::unbounded_channel::<Handoff>();
        runtime.spawn(async move {
            while let Some(handoff) = handoffs.recv().await {
                for (waiter, reply) in handoff {
                    let _ = waiter.send(reply);
                }
            }
        });
        *cell = Some(inbox.clone());
        Some(inbox)
    })
}

/// Why an item got no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkError {
    /// The queue to this peer is full.
    Full,
    /// The stream ended before the result came.
    Closed,
}

/// The stream to one peer.
pub(crate) struct Link {
    queue: mpsc::Sender<ForwardItem>,
    waiters: Waiters,
    open: Arc<AtomicBool>,
    next_id: AtomicU64,
    opened_at: crate::clock::Instant,
}

impl Link {
    /// Opens the stream on `runtime`.
    pub(crate) fn open(
        runtime: &tokio::runtime::Handle,
        address: &str,
        channel: Channel,
        secret: MetadataValue<Ascii>,
        header: &'static str,
    ) -> Self {
        let (queue, items) = mpsc::channel(QUEUE);
        let waiters: Waiters = Arc::default();
        let open = Arc::new(AtomicBool::new(true));
        runtime.spawn(run(
            ClusterClient::new(channel),
            address.to_owned(),
            items,
            waiters.clone(),
            open.clone(),
            (header, secret),
        ));
        Self {
            queue,
            waiters,
            open,
            next_id: AtomicU64::new(0),
            opened_at: crate::clock::now(),
        }
    }

    /// Whether the stream still runs.
    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// When the stream was opened: a peer is not dialled again more than
    /// once a second.
    pub(crate) fn opened_at(&self) -> crate::clock::Instant {
        self.opened_at
    }

    /// Queues `item` (its id is set here); the receiver gets its result.
    pub(crate) fn send(
        &self,
        mut item: ForwardItem,
    ) -> Result<(u64, oneshot::Receiver<ForwardReply>), LinkError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        item.id = id;
        let (reply, rx) = oneshot::channel();
        let waiter = Waiter {
            reply,
            inbox: inbox(),
        };
        self.lock().insert(id, waiter);
        if let Err(e) = self.queue.try_send(item) {
            self.forget(id);
            return Err(match e {
                mpsc::error::TrySendError::Full(_) => LinkError::Full,
                mpsc::error::TrySendError::Closed(_) => LinkError::Closed,
            });
        }
        Ok((id, rx))
    }

    /// Stops waiting for item `id` (its caller gave up).
    pub(crate) fn forget(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Waiter>> {
        self.waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Sends batches and delivers results until the stream ends.
async fn run(
    mut client: ClusterClient<Channel>,
    address: String,
    mut items: mpsc::Receiver<ForwardItem>,
    waiters: Waiters,
    open: Arc<AtomicBool>,
    (header, secret): (&'static str, MetadataValue<Ascii>),
) {
    let (batches, outgoing) = mpsc::channel::<ForwardBatch>(16);
    let outgoing = futures_util::stream::unfold(outgoing, |mut rx| async move {
        rx.recv().await.map(|batch| (batch, rx))
    });
    let mut request = tonic::Request::new(outgoing);
    request.metadata_mut().insert(header, secret);
    let sending = async move {
        while let Some(first) = items.recv().await {
            let mut bytes = first.encoded_len();
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
                match items.try_recv() {
                    Ok(item) => {
                        bytes += item.encoded_len();
                        batch.push(item);
                    }
                    Err(_) => break,
                }
            }
            if batches.send(ForwardBatch { items: batch }).await.is_err() {
                break;
            }
        }
    };
    let receiving = async {
        let response = match client.forward(request).await {
            Ok(response) => response,
            Err(status) => {
                warn!(peer = %address, "the forwarding stream was refused: {}", status.message());
                return;
            }
        };
        let mut results = response.into_inner();
        while let Ok(Some(message)) = results.message().await {
            deliver(&waiters, message.items);
        }
    };
    tokio::select! {
        () = sending => {}
        () = receiving => {}
    }
    open.store(false, Ordering::Release);
    // Every waiter learns the stream is gone (its sender is dropped).
    waiters
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clear();
}

/// Hands `results` to their waiters: one message to each waiting thread's
/// inbox, or the result itself when it is the thread's only one. A result
/// whose waiter gave up is dropped.
fn deliver(waiters: &Waiters, results: Vec<ForwardResult>) {
    // A message's results go to a few session threads: a short list.
    let mut handoffs: Vec<(mpsc::UnboundedSender<Handoff>, Handoff)> = Vec::new();
    {
        let mut waiting = waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for result in results {
            let (Some(waiter), Some(reply)) = (waiting.remove(&result.id), result.reply) else {
                continue;
            };
            let Some(inbox) = waiter.inbox else {
                let _ = waiter.reply.send(reply);
                continue;
            };
            match handoffs.iter_mut().find(|(i, _)| i.same_channel(&inbox)) {
                Some((_, handoff)) => handoff.push((waiter.reply, reply)),
                None => handoffs.push((inbox, vec![(waiter.reply, reply)])),
            }
        }
    }
    for (inbox, mut handoff) in handoffs {
        // A lone result goes straight to its waiter: one wake-up either
        // way, and the inbox's hop would only add work (at a moderate rate
        // most results messages carry one result for a thread).
        if handoff.len() == 1
            && let Some((waiter, reply)) = handoff.pop()
        {
            let _ = waiter.send(reply);
            continue;
        }
        // An inbox whose runtime is gone: its waiters are gone with it.
        let _ = inbox.send(handoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::rpc::pb::{NoReply, forward_reply};

    fn reply() -> ForwardReply {
        ForwardReply {
            outcome: Some(forward_reply::Outcome::NoReply(NoReply {})),
        }
    }

    #[test]
    fn a_threads_results_reach_its_inbox_in_one_message() {
        let waiters: Waiters = Arc::default();
        let (mine, mut my_handoffs) = mpsc::unbounded_channel();
        let (other, mut other_handoffs) = mpsc::unbounded_channel();
        let mut answers = HashMap::new();
        for (id, inbox) in [
            (1, Some(&mine)),
            (2, Some(&other)),
            (3, Some(&mine)),
            (4, None),
        ] {
            let (reply, rx) = oneshot::channel();
            let inbox = inbox.cloned();
            answers.insert(id, rx);
            waiters
                .lock()
                .expect("lock")
                .insert(id, Waiter { reply, inbox });
        }
        // Item 5's waiter gave up: its result is dropped.
        let results = (1..=5)
            .map(|id| ForwardResult {
                id,
                reply: Some(reply()),
            })
            .collect();
        deliver(&waiters, results);
        let handoff = my_handoffs.try_recv().expect("a message for this thread");
        assert_eq!(handoff.len(), 2, "both of its results in it");
        assert!(my_handoffs.try_recv().is_err(), "and only one message");
        assert!(
            other_handoffs.try_recv().is_err(),
            "a thread's lone result skips its inbox"
        );
        let lone = answers.remove(&2).expect("item 2").try_recv();
        assert!(lone.is_ok(), "and goes straight to its waiter");
        let direct = answers.remove(&4).expect("item 4").try_recv();
        assert!(
            direct.is_ok(),
            "a waiter without an inbox is answered directly"
        );
        assert!(waiters.lock().expect("lock").is_empty());
    }

    #[test]
    fn each_runtime_on_a_thread_gets_an_inbox_that_answers() {
        // The second runtime finds the first one's inbox gone and makes its own.
        for _ in 0..2 {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let inbox = inbox().expect("on a runtime");
                let (waiter, answer) = oneshot::channel();
                inbox.send(vec![(waiter, reply())]).expect("inbox open");
                assert_eq!(answer.await.ok(), Some(reply()));
            });
        }
        assert!(inbox().is_none(), "no inbox off a runtime");
    }
}
