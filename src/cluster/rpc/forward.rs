//! The owner's side of a peer's forwarding stream: every item of every
//! batch is answered concurrently, and whatever results are ready go back
//! together.
//!
//! One task serves the whole stream: the items' futures live in a
//! `FuturesUnordered` inside it rather than each in a task of its own.
//! Spawning a task per item (allocating and copying its multi-kilobyte
//! future, scheduling it, handing its result over a channel) was the
//! largest cost of a forwarded publish on the owner's gRPC thread
//! (BENCHMARKS.md, "Forwarding on the owner: one task per stream").

use super::pb::{
    self, ForwardBatch, ForwardReply, ForwardResult, NoReply, NotOwner, forward_reply,
};
use super::{FORWARD_METHOD, server_span};
use crate::cluster::Shared;
use crate::gateway::{Forwarded, PushComponent};
use futures_util::FutureExt as _;
use futures_util::stream::{FuturesUnordered, StreamExt as _};
use std::sync::Arc;
use tokio::sync::mpsc;
use tonic::Streaming;

/// Items of one peer's stream handled at once; past that, its stream is
/// read no further until some are answered.
const STREAM_CONCURRENCY: usize = 4096;
/// Most results sent back in one message.
const MAX_RESULTS: usize = 512;

/// Whether this node owns the route's shard; one being handed to it is
/// waited for, up to half the forward deadline.
pub(super) async fn owns(shared: &Shared, shard: Option<u32>) -> bool {
    let Some(shard) = shard else { return false };
    let fences = &shared.fences;
    fences.holds(shard) || fences.wait_held(shard, shared.forward_timeout / 2).await
}

/// Answers the items arriving on `incoming`, sending their results to
/// `results` in batches, until the peer stops sending and every item is
/// answered, or the results can no longer be sent.
pub(super) async fn serve(
    mut incoming: Streaming<ForwardBatch>,
    results: mpsc::Sender<Vec<ForwardResult>>,
    handler: Arc<PushComponent>,
    shared: Arc<Shared>,
) {
    let mut pending = FuturesUnordered::new();
    let mut reading = true;
    loop {
        let room = pending.len() < STREAM_CONCURRENCY;
        tokio::select! {
            biased;
            // Answers first: they free room and end waits at the peer.
            Some(first) = pending.next(), if !pending.is_empty() => {
                let mut ready = vec![first];
                // Whatever else is done already goes in the same message.
                while ready.len() < MAX_RESULTS {
                    match pending.next().now_or_never() {
                        Some(Some(result)) => ready.push(result),
                        _ => break,
                    }
                }
                if results.send(ready).await.is_err() {
                    return;
                }
            }
            message = incoming.message(), if reading && room => match message {
                Ok(Some(batch)) => {
                    count(&shared, &batch);
                    for item in batch.items {
                        pending.push(answer(handler.clone(), shared.clone(), item));
                    }
                }
                // The peer closed its side, or the stream broke: what was
                // taken is still answered, while the results can be sent.
                Ok(None) | Err(_) => reading = false,
            },
            else => return,
        }
    }
}

/// Counts a batch's items by kind, one counter update per kind.
fn count(shared: &Shared, batch: &ForwardBatch) {
    let (mut publishes, mut commands, mut unknown) = (0, 0, 0);
    for item in &batch.items {
        match &item.work {
            Some(pb::forward_item::Work::Publish(_)) => publishes += 1,
            Some(pb::forward_item::Work::Stanza(_)) => commands += 1,
            None => unknown += 1,
        }
    }
    for (kind, n) in [
        ("publish", publishes),
        ("command", commands),
        ("unknown", unknown),
    ] {
        if n > 0 {
            shared.metrics.forwarded_in.add(&[kind], n);
        }
    }
}

/// One item's result, in its SERVER span when traces are on, within the
/// forward deadline.
///
/// Not an `async fn`, and no nested one: each would keep its arguments
/// beside its callee's future, and this future is allocated and copied
/// for every item.
fn answer(
    handler: Arc<PushComponent>,
    shared: Arc<Shared>,
    item: pb::ForwardItem,
) -> impl Future<Output = ForwardResult> + Send {
    let pb::ForwardItem {
        id,
        route,
        work,
        traceparent,
    } = item;
    let span = handler.metrics.traces().map(|t| {
        let parent = crate::telemetry::remote(&traceparent);
        server_span(t, FORWARD_METHOD, &parent)
    });
    let shard = route.map(|r| r.shard);
    let answered = async move {
        let outcome = match work {
            Some(work) if owns(&shared, shard).await => {
                let answer = handler.answer_forwarded(work);
                match tokio::time::timeout(shared.forward_timeout, answer).await {
                    Ok(Forwarded::Reply(Some(reply))) => forward_reply::Outcome::Reply(reply),
                    Ok(Forwarded::Reply(None)) => forward_reply::Outcome::NoReply(NoReply {}),
                    // Past the caller's deadline it has answered `wait` already.
                    Ok(Forwarded::NotOwner) | Err(_) => {
                        forward_reply::Outcome::NotOwner(NotOwner {})
                    }
                }
            }
            // Nothing to do (a newer peer's kind of work): the caller answers `wait`.
            _ => forward_reply::Outcome::NotOwner(NotOwner {}),
        };
        ForwardResult {
            id,
            reply: Some(ForwardReply {
                outcome: Some(outcome),
            }),
        }
    };
    crate::telemetry::within(span, answered)
}
