//! Driving the gateway: registering devices through `register-device`, then
//! publishing at a rate (open loop) or with a window of publishes in flight
//! (closed loop), shaped like Prosody's and ejabberd's publishes.

use crate::sink::{MARKER, apns_token, fcm_token};
use crate::xmpp_peer::{COMPONENT_JID, DOMAIN, Replies};
use anyhow::Context as _;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Mutex;

/// Bytes buffered before a write to the socket.
const FLUSH_BYTES: usize = 32 * 1024;

/// The component connections, each written by one task at a time.
pub type Writers = Arc<[Mutex<OwnedWriteHalf>]>;

/// How publishes are paced.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pace {
    /// This many publishes per second, whatever the gateway does.
    Rate(u32),
    /// At most this many publishes awaiting their reply.
    Window(u32),
}

/// What a publish looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// Prosody's summary form (`type='form'`, empty fields).
    Prosody,
    /// ejabberd's (`type='submit'`, labelled field, publish-options secret).
    Ejabberd,
    /// Alternately one and the other.
    Mixed,
}

/// Registers devices `from..to` (even ones at APNs, odd ones at FCM), at most
/// `window` at once; returns how many failed.
pub async fn register(
    writers: &Writers,
    replies: &Arc<Replies>,
    from: u32,
    to: u32,
    window: u32,
) -> anyhow::Result<u64> {
    let failed_before = replies.registration_errors.load(Ordering::Relaxed);
    replies.register_window.add_permits(window as usize);
    let stride = writers.len() as u32;
    let mut tasks = Vec::new();
    for lane in 0..stride {
        let writers = writers.clone();
        let window = replies.register_window.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = String::with_capacity(FLUSH_BYTES * 2);
            let mut device = from + lane;
            while device < to {
                take_permit(&window, &writers, lane, &mut out).await?;
                register_stanza(&mut out, device);
                device += stride;
                if out.len() >= FLUSH_BYTES {
                    flush(&writers, lane, &mut out).await?;
                }
            }
            flush(&writers, lane, &mut out).await
        }));
    }
    for task in tasks {
        task.await??;
    }
    // Every registration answered: the window is whole again.
    let whole = tokio::time::timeout(
        Duration::from_secs(120),
        replies.register_window.acquire_many(window),
    )
    .await
    .context("registrations unanswered after 120 s")??;
    whole.forget();
    Ok(replies.registration_errors.load(Ordering::Relaxed) - failed_before)
}

/// Publishes to devices `0..devices` (round robin, each connection its own
/// devices so one device's publishes stay in order) for `duration`.
pub async fn publish(
    writers: &Writers,
    replies: &Arc<Replies>,
    ledger: &Arc<crate::ledger::Ledger>,
    devices: u32,
    pace: Pace,
    shape: Shape,
    duration: Duration,
) -> anyhow::Result<()> {
    let nodes: Arc<Vec<String>> = Arc::new(
        replies
            .nodes
            .lock()
            .map_err(|_| anyhow::anyhow!("node list poisoned"))?
            .iter()
            .take(devices as usize)
            .cloned()
            .collect(),
    );
    if let Pace::Window(window) = pace {
        // A device never has two publishes in the window: the gateway would
        // merge them, and the first would never free its permit.
        ledger
            .window()
            .add_permits(window.min(devices).max(1) as usize);
    }
    let lanes = writers.len() as u32;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for lane in 0..lanes {
        let lane_job = Lane {
            ledger: ledger.clone(),
            writers: writers.clone(),
            nodes: nodes.clone(),
            lane,
            lanes,
            shape,
            start,
            until: start + duration,
        };
        tasks.push(tokio::spawn(async move {
            match pace {
                Pace::Rate(rate) => lane_job.open_loop(f64::from(rate) / f64::from(lanes)).await,
                Pace::Window(_) => lane_job.closed_loop().await,
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// One connection's share of the publishes.
struct Lane {
    ledger: Arc<crate::ledger::Ledger>,
    writers: Writers,
    nodes: Arc<Vec<String>>,
    lane: u32,
    lanes: u32,
    shape: Shape,
    start: Instant,
    until: Instant,
}

impl Lane {
    fn device(&self, k: u64) -> u32 {
        let devices = self.nodes.len() as u64;
        ((u64::from(self.lane) + k * u64::from(self.lanes)) % devices.max(1)) as u32
    }

    /// Appends the k-th publish of this lane, due at `due`; false when the
    /// ledger is full.
    fn append(&self, out: &mut String, k: u64, due: Instant) -> bool {
        let device = self.device(k);
        let Some(seq) = self.ledger.allocate(device, due) else {
            return false;
        };
        let node = self.nodes.get(device as usize).map_or("", String::as_str);
        let prosody = match self.shape {
            Shape::Prosody => true,
            Shape::Ejabberd => false,
            Shape::Mixed => seq % 2 == 0,
        };
        if prosody {
            prosody_publish(out, seq, node);
        } else {
            ejabberd_publish(out, seq, node);
        }
        true
    }

    async fn open_loop(self, rate: f64) -> anyhow::Result<()> {
        let mut out = String::with_capacity(FLUSH_BYTES * 2);
        let mut k: u64 = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let now = Instant::now();
            let end = now.min(self.until);
            let target = ((end - self.start).as_secs_f64() * rate) as u64;
            while k < target {
                let due = self.start + Duration::from_secs_f64(k as f64 / rate);
                if !self.append(&mut out, k, due) {
                    return flush(&self.writers, self.lane, &mut out).await;
                }
                k += 1;
                if out.len() >= FLUSH_BYTES {
                    flush(&self.writers, self.lane, &mut out).await?;
                }
            }
            flush(&self.writers, self.lane, &mut out).await?;
            if now >= self.until {
                return Ok(());
            }
        }
    }

    async fn closed_loop(self) -> anyhow::Result<()> {
        let mut out = String::with_capacity(FLUSH_BYTES * 2);
        let window = self.ledger.window().clone();
        let mut k: u64 = 0;
        while Instant::now() < self.until {
            take_permit(&window, &self.writers, self.lane, &mut out).await?;
            if !self.append(&mut out, k, Instant::now()) {
                break;
            }
            k += 1;
            if out.len() >= FLUSH_BYTES {
                flush(&self.writers, self.lane, &mut out).await?;
            }
        }
        flush(&self.writers, self.lane, &mut out).await
    }
}

/// Takes one permit; if none is free, first sends what is buffered (the
/// replies that free permits need it), then waits.
async fn take_permit(
    window: &tokio::sync::Semaphore,
    writers: &Writers,
    lane: u32,
    out: &mut String,
) -> anyhow::Result<()> {
    if let Ok(permit) = window.try_acquire() {
        permit.forget();
        return Ok(());
    }
    flush(writers, lane, out).await?;
    window.acquire().await?.forget();
    Ok(())
}

async fn flush(writers: &Writers, lane: u32, out: &mut String) -> anyhow::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let writer = writers
        .get(lane as usize)
        .context("no component connection for this lane")?;
    writer
        .lock()
        .await
        .write_all(out.as_bytes())
        .await
        .context("the gateway closed a component connection")?;
    out.clear();
    Ok(())
}

/// `register-device` for `device`, submitted in one step as Siskin does.
fn register_stanza(out: &mut String, device: u32) {
    let (provider, token) = if device.is_multiple_of(2) {
        ("apns", apns_token(device))
    } else {
        ("fcm", fcm_token(device))
    };
    let _ = write!(
        out,
        "<iq type='set' id='r{device}' from='user{device}@{DOMAIN}/bench' to='{COMPONENT_JID}' xml:lang='en'><command xmlns='http://jabber.org/protocol/commands' node='register-device' action='execute'><x xmlns='jabber:x:data' type='submit'><field var='provider'><value>{provider}</value></field><field var='device-token'><value>{token}</value></field><field var='device-name'><value>bench</value></field></x></command></iq>"
    );
}

/// Prosody's publish (`docs/protocol.md` §4), body carrying the sequence number.
fn prosody_publish(out: &mut String, seq: u64, node: &str) {
    let _ = write!(
        out,
        "<iq type='set' from='{DOMAIN}' to='{COMPONENT_JID}' id='p{seq}'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{node}'><item><notification xmlns='urn:xmpp:push:0'><x type='form' xmlns='jabber:x:data'><field type='hidden' var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field><field type='text-single' var='message-count'><value>1</value></field><field type='text-single' var='pending-subscription-count'/><field type='jid-single' var='last-message-sender'/><field type='text-single' var='last-message-body'><value>{MARKER}{seq}</value></field></x></notification></item></publish></pubsub></iq>"
    );
}

/// ejabberd's publish (`docs/protocol.md` §4), with its publish-options secret.
fn ejabberd_publish(out: &mut String, seq: u64, node: &str) {
    let _ = write!(
        out,
        "<iq to='{COMPONENT_JID}' from='{DOMAIN}' type='set' id='p{seq}'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{node}'><item><notification xmlns='urn:xmpp:push:0'><x type='submit' xmlns='jabber:x:data'><field var='FORM_TYPE' type='hidden'><value>urn:xmpp:push:summary</value></field><field var='last-message-body' type='text-single' label='The body text of the last received message'><value>{MARKER}{seq}</value></field></x></notification></item></publish><publish-options><x type='submit' xmlns='jabber:x:data'><field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field><field var='secret'><value>bench-secret</value></field></x></publish-options></pubsub></iq>"
    );
}
