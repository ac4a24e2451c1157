//! Integration tests: the gateway against a fake XMPP server and mock APNs/FCM
//! providers, as a child process where the process boundary matters and in
//! this process (on paused time where it helps) elsewhere. One test binary, a
//! module per behaviour.

// These tests drive real processes and servers and measure real time; the
// clock ban of clippy.toml is for the gateway's own code.
#![allow(clippy::disallowed_methods)]

mod support;

mod apns_cert;
mod bench;
mod chart;
mod cluster;
mod component;
mod config_check;
mod dashboard;
mod delivery;
mod http_api;
mod in_process;
mod interop;
mod otlp;
mod outbox;
mod publish;
mod redis_faults;
mod registration;
mod robustness;
mod store;
mod store_gateway;
