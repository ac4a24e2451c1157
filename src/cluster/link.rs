//! The forwarding stream to one peer: a long-lived `Forward` call whose
//! request side carries batches of stanzas and whose response side brings
//! their results back by id. Callers queue an item and wait for its result;
//! a task on the cluster runtime sends whatever has queued up as one batch
//! and hands each result to its waiter. When the stream ends, every waiter
//! learns so (and answers `wait`); the next forward opens a new one.

use super::rpc::pb::cluster_client::ClusterClient;
use super::rpc::pb::{ForwardBatch, ForwardItem, ForwardReply};
use prost::Message;
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

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<ForwardReply>>>>;

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
        let (tx, rx) = oneshot::channel();
        self.lock().insert(id, tx);
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<ForwardReply>>> {
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
            let mut waiting = waiters
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for result in message.items {
                if let (Some(tx), Some(reply)) = (waiting.remove(&result.id), result.reply) {
                    let _ = tx.send(reply);
                }
            }
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
