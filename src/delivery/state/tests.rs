//! The schedule's rules, on a clock the test moves by hand.

use super::*;
use crate::delivery::RetryPolicy;
use crate::providers::Push;
use std::collections::BTreeMap;
use std::time::Duration;

const T0: u64 = 1_700_000_000_000;

fn settings() -> Settings {
    Settings {
        capacity: 3,
        window_ms: 100,
        min_interval_ms: 0,
        retry: RetryPolicy {
            backoff: crate::backoff::Backoff::new(1_000, 60_000).expect("valid"),
            max_age_ms: 3_600_000,
        },
    }
}

fn push(kind: PushKind, count: u32, token: &str) -> Push {
    Push {
        token: token.into(),
        kind,
        collapse_id: None,
        badge: Some(count),
        alert_title: None,
        alert_body: None,
        data: BTreeMap::new(),
    }
}

fn arrival(node: &str, kind: PushKind, count: u32) -> Arrival {
    Arrival {
        node: node.into(),
        provider: "apns".into(),
        push: push(kind, count, "tok"),
        trace: None,
    }
}

/// Admits a publish that must fit.
fn admit(s: &mut PoolState, node: &str, kind: PushKind, count: u32, at: u64) {
    s.accept(arrival(node, kind, count), at).expect("room");
}

fn sends(steps: Vec<Step>) -> Vec<Attempt> {
    steps
        .into_iter()
        .filter_map(|s| match s {
            Step::Send(a) => Some(a),
            Step::Expired(..) => None,
        })
        .collect()
}

fn none(_: u64) -> u64 {
    0
}

fn all(n: u64) -> u64 {
    n
}

#[test]
fn a_burst_within_the_window_becomes_one_push() {
    let mut s = PoolState::new(settings());
    for i in 1..=6 {
        let kind = if i == 3 {
            PushKind::Alert
        } else {
            PushKind::Background
        };
        let (admission, _) = s
            .accept(arrival("n", kind, i), T0 + i as u64)
            .expect("room");
        assert_eq!(admission == Admission::New, i == 1);
    }
    assert_eq!(s.len(), 1);
    assert!(
        sends(s.take_due(T0 + 100, 10)).is_empty(),
        "window not over"
    );
    let sent = sends(s.take_due(T0 + 101, 10));
    assert_eq!(sent.len(), 1);
    let push = &s.entry(&sent[0].key).expect("held").push;
    assert_eq!(push.badge, Some(6), "latest count");
    assert_eq!(push.kind, PushKind::Alert, "highest priority");
    let done = s.complete(
        "n",
        sent[0].version,
        Outcome::Delivered,
        T0 + 150,
        &mut none,
    );
    assert_eq!(done.persist, [Persist::Delete("n".into())]);
    let settled = done.settled.expect("settled");
    assert_eq!(
        (settled.fate, settled.publishes, settled.accepted_ms),
        (Fate::Delivered, 6, T0 + 1)
    );
    assert!(s.is_empty());
}

#[test]
fn a_publish_during_an_attempt_gets_a_push_of_its_own() {
    let mut s = PoolState::new(settings());
    admit(&mut s, "n", PushKind::Alert, 1, T0);
    let sent = sends(s.take_due(T0 + 100, 10));
    admit(&mut s, "n", PushKind::Alert, 2, T0 + 120);
    admit(&mut s, "n", PushKind::Alert, 3, T0 + 130);
    let done = s.complete(
        "n",
        sent[0].version,
        Outcome::Delivered,
        T0 + 140,
        &mut none,
    );
    assert_eq!(done.settled.map(|x| x.publishes), Some(1));
    match done.persist.as_slice() {
        [Persist::Put(key)] => {
            let e = s.entry(key).expect("held");
            assert_eq!(
                (e.publishes, e.accepted_ms, e.due_ms),
                (2, T0 + 120, T0 + 220)
            );
            assert_eq!(e.push.badge, Some(3));
        }
        other => panic!("expected a put, got {other:?}"),
    }
    let again = sends(s.take_due(T0 + 220, 10));
    assert_eq!(again.len(), 1);
}

#[test]
fn retry_after_is_honoured_to_the_millisecond() {
    let mut s = PoolState::new(settings());
    admit(&mut s, "n", PushKind::Alert, 1, T0);
    let sent = sends(s.take_due(T0 + 100, 10));
    let after = Some(Duration::from_secs(30));
    let done = s.complete(
        "n",
        sent[0].version,
        Outcome::Retry(after),
        T0 + 200,
        &mut none,
    );
    assert_eq!(done.retry_in_ms, Some(30_000));
    assert!(
        matches!(done.persist.as_slice(), [Persist::Put(key)] if s.entry(key).is_some_and(|e| e.due_ms == T0 + 30_200 && e.attempts == 1))
    );
    assert!(sends(s.take_due(T0 + 30_199, 10)).is_empty());
    assert_eq!(s.next_wake(), Some(T0 + 30_200));
    assert_eq!(sends(s.take_due(T0 + 30_200, 10)).len(), 1);
}

#[test]
fn backoff_doubles_with_full_jitter() {
    let mut s = PoolState::new(settings());
    admit(&mut s, "n", PushKind::Alert, 1, T0);
    let mut now = T0 + 100;
    let mut delays = Vec::new();
    for _ in 0..4 {
        let sent = sends(s.take_due(now, 10));
        let done = s.complete("n", sent[0].version, Outcome::Retry(None), now, &mut all);
        let delay = done.retry_in_ms.expect("retry");
        delays.push(delay);
        now += delay;
    }
    assert_eq!(delays, [1_000, 2_000, 4_000, 8_000]);
    let sent = sends(s.take_due(now, 10));
    let done = s.complete("n", sent[0].version, Outcome::Retry(None), now, &mut none);
    assert_eq!(done.retry_in_ms, Some(0), "jitter may pick zero");
}

#[test]
fn notifications_older_than_the_maximum_age_are_dropped_and_counted() {
    let mut st = settings();
    st.retry.max_age_ms = 10_000;
    let mut s = PoolState::new(st);
    admit(&mut s, "n", PushKind::Alert, 1, T0);
    admit(&mut s, "n", PushKind::Alert, 2, T0 + 1);
    let sent = sends(s.take_due(T0 + 100, 10));
    let done = s.complete(
        "n",
        sent[0].version,
        Outcome::Retry(Some(Duration::from_secs(20))),
        T0 + 200,
        &mut none,
    );
    assert_eq!(done.persist, [Persist::Delete("n".into())]);
    assert_eq!(
        done.settled.map(|x| (x.fate, x.publishes)),
        Some((Fate::Expired, 2))
    );

    // An old entry found in the store at start-up.
    let mut s = PoolState::new(st);
    let mut old = OutboxEntry {
        key: "m".into(),
        node: "m".into(),
        provider: "apns".into(),
        push: push(PushKind::Alert, 1, "tok"),
        accepted_ms: T0,
        due_ms: T0 + 5_000,
        attempts: 2,
        publishes: 1,
    };
    s.load([old.clone()]);
    assert!(
        matches!(s.take_due(T0 + 20_000, 10).as_slice(), [Step::Expired(x, Persist::Delete(k))] if x.fate == Fate::Expired && k == "m")
    );
    old.accepted_ms = T0 + 15_000;
    s.load([old]);
    assert_eq!(
        sends(s.take_due(T0 + 20_000, 10)).len(),
        1,
        "a young one is resumed"
    );
}

#[test]
fn calls_are_never_merged_delayed_or_rate_limited() {
    let mut st = settings();
    st.min_interval_ms = 60_000;
    let mut s = PoolState::new(st);
    admit(&mut s, "n", PushKind::Alert, 1, T0);
    admit(&mut s, "n", PushKind::Voip, 1, T0);
    admit(&mut s, "n", PushKind::Voip, 1, T0);
    assert_eq!(s.len(), 3);
    let sent = sends(s.take_due(T0, 10));
    assert_eq!(
        sent.len(),
        2,
        "both calls at once, the message after its window"
    );
    assert!(sent.iter().all(|a| {
        s.entry(&a.key)
            .is_some_and(|e| e.push.kind == PushKind::Voip)
    }));
    assert_ne!(sent[0].key, sent[1].key);
}

#[test]
fn min_interval_merges_instead_of_refusing() {
    let mut st = settings();
    st.min_interval_ms = 5_000;
    let mut s = PoolState::new(st);
    admit(&mut s, "n", PushKind::Alert, 1, T0);
    let sent = sends(s.take_due(T0 + 100, 10));
    s.complete(
        "n",
        sent[0].version,
        Outcome::Delivered,
        T0 + 150,
        &mut none,
    );
    for i in 2..=4 {
        s.accept(arrival("n", PushKind::Alert, i), T0 + 200 + u64::from(i))
            .expect("merged, never refused");
    }
    assert_eq!(s.len(), 1);
    assert!(sends(s.take_due(T0 + 5_149, 10)).is_empty());
    let sent = sends(s.take_due(T0 + 5_150, 10));
    assert_eq!(s.entry(&sent[0].key).expect("held").push.badge, Some(4));
}

#[test]
fn misconfiguration_pauses_the_pool_and_keeps_everything() {
    let mut s = PoolState::new(settings());
    admit(&mut s, "a", PushKind::Alert, 1, T0);
    admit(&mut s, "b", PushKind::Alert, 1, T0);
    let sent = sends(s.take_due(T0 + 100, 1));
    let done = s.complete(
        &sent[0].key,
        sent[0].version,
        Outcome::Misconfigured,
        T0 + 100,
        &mut none,
    );
    assert_eq!(done.health_changed, Some(false));
    assert!(done.settled.is_none(), "nothing dropped");
    assert!(s.paused());
    assert!(s.take_due(T0 + 1_099, 10).is_empty(), "paused: b waits too");
    assert_eq!(s.next_wake(), Some(T0 + 1_100));
    let sent = sends(s.take_due(T0 + 1_100, 10));
    assert_eq!(sent.len(), 2);
    let done = s.complete(
        &sent[0].key,
        sent[0].version,
        Outcome::Misconfigured,
        T0 + 1_100,
        &mut none,
    );
    assert_eq!(done.health_changed, None, "still unhealthy");
    assert_eq!(done.retry_in_ms, Some(2_000), "the pause grows");
    let done = s.complete(
        &sent[1].key,
        sent[1].version,
        Outcome::Delivered,
        T0 + 1_200,
        &mut none,
    );
    assert_eq!(done.health_changed, Some(true));
    assert!(!s.paused());
}

#[test]
fn a_dead_token_drops_everything_merged_for_it() {
    let mut s = PoolState::new(settings());
    admit(&mut s, "n", PushKind::Alert, 1, T0);
    let sent = sends(s.take_due(T0 + 100, 10));
    admit(&mut s, "n", PushKind::Alert, 2, T0 + 110);
    let done = s.complete(
        "n",
        sent[0].version,
        Outcome::TokenDead,
        T0 + 120,
        &mut none,
    );
    assert_eq!(done.persist, [Persist::Delete("n".into())]);
    assert_eq!(
        done.settled.map(|x| (x.fate, x.publishes)),
        Some((Fate::TokenDead, 2))
    );
    assert!(s.is_empty());
}

#[test]
fn a_failed_notification_does_not_take_newer_ones_along() {
    let mut s = PoolState::new(settings());
    admit(&mut s, "n", PushKind::Alert, 1, T0);
    let sent = sends(s.take_due(T0 + 100, 10));
    admit(&mut s, "n", PushKind::Alert, 2, T0 + 110);
    let done = s.complete("n", sent[0].version, Outcome::Fail, T0 + 120, &mut none);
    assert_eq!(
        done.settled.map(|x| (x.fate, x.publishes)),
        Some((Fate::Failed, 1))
    );
    assert_eq!(sends(s.take_due(T0 + 120, 10)).len(), 1);
}

#[test]
fn unknown_errors_are_retried_a_few_times_then_failed() {
    let mut s = PoolState::new(settings());
    admit(&mut s, "n", PushKind::Alert, 1, T0);
    for (now, attempt) in (T0 + 100..).zip(1..=UNKNOWN_MAX_ATTEMPTS) {
        let sent = sends(s.take_due(now, 10));
        assert_eq!(sent.len(), 1, "attempt {attempt}");
        let done = s.complete("n", sent[0].version, Outcome::Unknown(None), now, &mut none);
        if attempt < UNKNOWN_MAX_ATTEMPTS {
            assert!(done.settled.is_none());
        } else {
            assert_eq!(done.settled.map(|x| x.fate), Some(Fate::Failed));
        }
    }
    assert!(s.is_empty());
}

#[test]
fn renewed_credentials_retry_at_once_but_only_once() {
    let mut s = PoolState::new(settings());
    admit(&mut s, "n", PushKind::Alert, 1, T0);
    let sent = sends(s.take_due(T0 + 100, 10));
    let done = s.complete("n", sent[0].version, Outcome::RetryNow, T0 + 150, &mut all);
    assert_eq!(done.retry_in_ms, Some(0));
    let sent = sends(s.take_due(T0 + 150, 10));
    let done = s.complete("n", sent[0].version, Outcome::RetryNow, T0 + 160, &mut all);
    assert_eq!(done.retry_in_ms, Some(1_000), "then it backs off");
}

#[test]
fn capacity_bounds_new_entries_but_not_merges() {
    let mut s = PoolState::new(settings());
    for node in ["a", "b", "c"] {
        admit(&mut s, node, PushKind::Alert, 1, T0);
    }
    assert_eq!(
        s.accept(arrival("d", PushKind::Alert, 1), T0).err(),
        Some(Full)
    );
    assert!(s.accept(arrival("a", PushKind::Alert, 2), T0).is_ok());
    assert_eq!(s.queued(T0 + 100), 3);
    assert_eq!(s.oldest_accepted(), Some(T0));
}

#[test]
fn loaded_entries_keep_their_schedule_and_call_ids() {
    let mut s = PoolState::new(settings());
    let call = OutboxEntry {
        key: "n#call#0000000000000009".into(),
        node: "n".into(),
        provider: "apns".into(),
        push: push(PushKind::Voip, 1, "voip"),
        accepted_ms: T0,
        due_ms: T0 + 500,
        attempts: 1,
        publishes: 1,
    };
    s.load([call]);
    assert!(sends(s.take_due(T0 + 499, 10)).is_empty());
    let (_, put) = s
        .accept(arrival("n", PushKind::Voip, 1), T0 + 1)
        .expect("room");
    assert!(
        matches!(&put, Persist::Put(key) if key == "n#call#000000000000000a"),
        "no key reuse"
    );
}

#[test]
fn a_removed_account_takes_its_entries_pending_and_in_flight_and_nothing_else() {
    let mut s = PoolState::new(settings());
    admit(&mut s, "gone", PushKind::Alert, 1, T0);
    admit(&mut s, "gone", PushKind::Voip, 1, T0);
    admit(&mut s, "other", PushKind::Alert, 1, T0);
    // The call goes out at once and is in flight; the alert waits its window.
    let call = sends(s.take_due(T0, 1));
    assert_eq!(call.len(), 1);
    let mut dropped = s.forget("gone");
    dropped.sort_by(|a, b| format!("{:?}", a.1).cmp(&format!("{:?}", b.1)));
    assert_eq!(dropped.len(), 2);
    assert!(
        dropped
            .iter()
            .all(|(settled, _)| settled.fate == Fate::AccountRemoved)
    );
    assert_eq!(dropped[0].1, Persist::Delete("gone".into()));
    assert_eq!(dropped[1].1, Persist::Delete(call[0].key.clone()));
    assert_eq!(s.len(), 1);
    // The call's answer finds nothing to apply to.
    let done = s.complete(
        &call[0].key,
        call[0].version,
        Outcome::Delivered,
        T0 + 5,
        &mut none,
    );
    assert!(done.persist.is_empty() && done.settled.is_none());
    let sent = sends(s.take_due(T0 + 100, 10));
    assert_eq!(
        sent.iter().map(|a| a.node.as_str()).collect::<Vec<_>>(),
        ["other"]
    );
    assert!(s.forget("gone").is_empty());
}

#[test]
fn a_traced_publish_hands_its_span_to_the_attempt_and_a_merge_keeps_the_first() {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    let context = |n: u8| {
        SpanContext::new(
            TraceId::from_bytes([n; 16]),
            SpanId::from_bytes([n; 8]),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        )
    };
    let mut s = PoolState::new(settings());
    let untraced = arrival("n1", PushKind::Alert, 1);
    assert!(s.accept(untraced, T0).is_ok());
    let first = Arrival {
        trace: Some(context(1)),
        ..arrival("n1", PushKind::Alert, 2)
    };
    assert!(s.accept(first, T0 + 1).is_ok());
    let second = Arrival {
        trace: Some(context(2)),
        ..arrival("n1", PushKind::Alert, 3)
    };
    assert!(s.accept(second, T0 + 2).is_ok());
    let attempts = sends(s.take_due(T0 + 10_000, 10));
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        attempts[0].trace.as_deref().map(SpanContext::trace_id),
        Some(TraceId::from_bytes([1; 16]))
    );
}
