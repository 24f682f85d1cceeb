//! HTTP, both ways: the gateway a node serves with `--http` ([`gateway`]: XML-RPC and
//! JSON-RPC 2.0 on the node's methods, `/metrics`, `/health`, `/ready`, the live
//! dashboard in [`dashboard`]; its server loop in [`server`],
//! its token and allowlist in [`access`]), and Rust clients of remote
//! XML-RPC and JSON-RPC servers ([`remote`]). The document formats are in [`xmlrpc`] and
//! [`jsonrpc`]; [`metrics`] is the Prometheus side of `/metrics`.
//!
//! The gateway reaches its node only through a client link, like any other caller, so it
//! needs no handle on the node's internals; it stops with the node's root token, last.

pub(crate) mod access;
mod dashboard;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod gateway;
mod jsonrpc;
pub(crate) mod metrics;
pub mod remote;
pub(crate) mod server;
pub(crate) mod xmlrpc;
