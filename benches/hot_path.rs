//! Micro-benchmarks of the per-notification hot path (BENCHMARKS.md):
//! stanza bytes → Notification, payload build, node lookup in each store
//! backend, and the APNs JWT reuse. `cargo bench --bench hot_path`.

#![allow(clippy::disallowed_methods)]

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use pushgate::app::{Request, classify};
use pushgate::config::{StoreBackend, StoreConfig};
use pushgate::delivery::{PayloadPolicy, build_push};
use pushgate::providers::{ApnsTokenSigner, apns_payload, fcm_data, fcm_message};
use pushgate::registry::{NewRegistration, Registration, Registry};
use pushgate::xmpp::{StreamEvent, StreamReader};
use std::hint::black_box;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const HEADER: &[u8] = b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:component:accept' id='s1' from='push.localhost'>";
const PROSODY: &[u8] = b"<iq type='set' from='localhost' to='push.localhost' id='c5d92cfd'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='test-node-0001'><item><notification xmlns='urn:xmpp:push:0'><x type='form' xmlns='jabber:x:data'><field type='hidden' var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field><field type='text-single' var='message-count'><value>1</value></field><field type='text-single' var='pending-subscription-count'/><field type='jid-single' var='last-message-sender'/><field type='text-single' var='last-message-body'><value>New Message!</value></field></x></notification></item></publish><publish-options><x type='submit' xmlns='jabber:x:data'><field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field><field var='secret'><value>push-secret-0001</value></field></x></publish-options></pubsub></iq>";

/// Bytes of one Prosody publish → parsed element → classified → Notification.
fn stanza_to_notification(c: &mut Criterion) {
    let mut reader = StreamReader::new(65536);
    let mut events = Vec::new();
    if reader.feed(HEADER, &mut events).is_err() {
        panic!("stream header refused");
    }
    c.bench_function("stanza parse → Notification (Prosody publish)", |b| {
        b.iter(|| {
            events.clear();
            let _ = reader.feed(black_box(PROSODY), &mut events);
            let Some(StreamEvent::Stanza(stanza)) = events.pop() else {
                panic!("no stanza parsed");
            };
            match classify(&stanza) {
                Request::Publish { request, .. } => black_box(request.node.len()),
                other => panic!("not a publish: {other:?}"),
            }
        });
    });
}

/// The same publish on the hot path: split from the stream, read from its
/// bytes ([`pushgate::app::fast`]).
fn stanza_to_notification_fast(c: &mut Criterion) {
    let mut reader = StreamReader::new(65536);
    let mut events = Vec::new();
    if reader.feed(HEADER, &mut events).is_err() {
        panic!("stream header refused");
    }
    reader.split_raw();
    c.bench_function(
        "stanza split + fast read → Notification (Prosody publish)",
        |b| {
            b.iter(|| {
                events.clear();
                let _ = reader.feed(black_box(PROSODY), &mut events);
                let Some(StreamEvent::Raw(stanza)) = events.pop() else {
                    panic!("no stanza split");
                };
                match pushgate::app::fast::publish(&stanza) {
                    Some(Request::Publish { request, .. }) => black_box(request.node.len()),
                    other => panic!("not a publish: {other:?}"),
                }
            });
        },
    );
}

fn registration() -> Registration {
    Registration {
        node: "Vb3R1dXbXyvRZp9sJk2qJ7X0m4w".into(),
        account_hash: "h".into(),
        account: None,
        account_domain: "localhost".into(),
        provider: "apns".into(),
        token: "a".repeat(64),
        voip_token: None,
        secret_hash: None,
        created_ms: 0,
        updated_ms: 0,
        identity: None,
        unpublished: false,
    }
}

/// Notification + registration → Push → provider JSON bytes.
fn payload_build(c: &mut Criterion) {
    let notification = pushgate::app::Notification {
        message_count: Some(1),
        body: Some("New Message!".into()),
        ..Default::default()
    };
    let registration = registration();
    let policy = PayloadPolicy::default();
    c.bench_function("payload build (APNs JSON)", |b| {
        // The push takes the notification: each iteration gets a copy made
        // outside the measurement (the gateway's comes from the parse).
        b.iter_batched(
            || notification.clone(),
            |n| {
                let push = build_push(black_box(n), &registration, &policy);
                black_box(serde_json::to_vec(&apns_payload(&push)).map(|v| v.len()))
            },
            BatchSize::SmallInput,
        );
    });
    c.bench_function("payload build (FCM v1 JSON)", |b| {
        b.iter_batched(
            || notification.clone(),
            |n| {
                let push = build_push(black_box(n), &registration, &policy);
                let message = fcm_message(&push, fcm_data(&push), 86400);
                black_box(serde_json::to_vec(&message).map(|v| v.len()))
            },
            BatchSize::SmallInput,
        );
    });
}

/// Registers `count` devices; returns their nodes.
fn populate(runtime: &tokio::runtime::Runtime, registry: &Registry, count: usize) -> Vec<String> {
    let mut nodes = Vec::with_capacity(count);
    for i in 0..count {
        let new = NewRegistration {
            account: format!("user{i}@localhost"),
            provider: "apns".into(),
            token: format!("{i:064x}"),
            voip_token: None,
            secret: None,
            device_id: None,
            keep_account: false,
            max_per_account: 0,
        };
        match runtime.block_on(registry.register(new)) {
            Ok(r) => nodes.push(r.node),
            Err(e) => panic!("registering: {e}"),
        }
    }
    nodes
}

fn lookup(c: &mut Criterion, name: &str, registry: &Registry, runtime: &tokio::runtime::Runtime) {
    let nodes = populate(runtime, registry, 10_000);
    let mut i = 0;
    c.bench_function(name, |b| {
        b.iter(|| {
            i = (i + 7919) % nodes.len();
            let node = nodes.get(i).map_or("", String::as_str);
            black_box(runtime.block_on(registry.get(node)).map(|r| r.is_some()))
        });
    });
}

/// `Registry::get` of one of 10,000 registered nodes, per backend.
fn node_lookup(c: &mut Criterion) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        panic!("runtime");
    };
    let Ok(dir) = tempfile::tempdir() else {
        panic!("tempdir");
    };
    match Registry::open_embedded(dir.path()) {
        Ok(registry) => lookup(
            c,
            "node lookup (embedded redb, 10k nodes)",
            &registry,
            &runtime,
        ),
        Err(e) => panic!("embedded store: {e}"),
    }
    let Some(redis) = RedisChild::start(dir.path()) else {
        eprintln!(
            "node lookup (redis): skipped: redis-server not found (apt-get install redis-server)"
        );
        return;
    };
    let config = StoreConfig {
        backend: StoreBackend::Redis,
        url: Some(format!("redis://127.0.0.1:{}", redis.port)),
        ..StoreConfig::default()
    };
    let registry = match Registry::open(&config) {
        Ok(r) => r,
        Err(e) => panic!("redis store: {e}"),
    };
    if let Err(e) = runtime.block_on(registry.connect()) {
        panic!("redis connect: {e}");
    }
    lookup(
        c,
        "node lookup (redis, cached, 10k nodes)",
        &registry,
        &runtime,
    );
    let uncached = StoreConfig {
        cache_entries: 0,
        ..config
    };
    match Registry::open(&uncached) {
        Ok(registry) => {
            if let Err(e) = runtime.block_on(registry.connect()) {
                panic!("redis connect: {e}");
            }
            lookup(
                c,
                "node lookup (redis, no cache, 10k nodes)",
                &registry,
                &runtime,
            );
        }
        Err(e) => panic!("redis store: {e}"),
    }
}

/// The bearer token of every APNs request: signed once, then reused.
fn jwt_reuse(c: &mut Criterion) {
    let Ok(key) = rcgen::KeyPair::generate() else {
        panic!("P-256 key");
    };
    let Ok(signer) = ApnsTokenSigner::new(
        "apns",
        "TEAM123456",
        "KEY1234567",
        key.serialize_pem().as_bytes(),
    ) else {
        panic!("signer");
    };
    c.bench_function("APNs bearer token (reused)", |b| {
        b.iter(|| black_box(signer.bearer().map(|t| t.len())));
    });
    c.bench_function(
        "APNs bearer token (signing a new one, for comparison)",
        |b| {
            b.iter_batched(
                || {
                    ApnsTokenSigner::new(
                        "apns",
                        "TEAM123456",
                        "KEY1234567",
                        key.serialize_pem().as_bytes(),
                    )
                },
                |fresh| black_box(fresh.map(|s| s.bearer().map(|t| t.len()))),
                BatchSize::SmallInput,
            );
        },
    );
}

/// A throw-away redis-server for the lookup bench.
struct RedisChild {
    child: Child,
    port: u16,
}

impl RedisChild {
    fn start(dir: &std::path::Path) -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .ok()?
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .ok()?;
        let redis = Self { child, port };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(redis);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for RedisChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

criterion_group!(
    benches,
    stanza_to_notification,
    stanza_to_notification_fast,
    payload_build,
    node_lookup,
    jwt_reuse
);
criterion_main!(benches);
