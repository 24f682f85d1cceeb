//! The library's behaviour in process: nodes started by the test itself, over loopback
//! and in-memory links, plus the repository's own checks (layout, manifests). One binary,
//! one module per subject.

#[path = "../support/mod.rs"]
mod support;

mod actors;
mod api;
mod bad_input;
mod bounds;
mod cluster;
mod cluster_membership;
mod decoders;
mod deploy;
mod durable;
mod dynamic;
mod gateway;
mod identity;
mod layout;
mod mixed_versions;
mod probes;
mod services;
mod streams;
mod tls;
