//! meshrpc: every node is a tokio actor system that serves registered methods over framed
//! TCP and calls its peers over the same links.
//!
//! The crate is built in layers, each a folder; a layer imports only the ones above it here:
//!
//! ```text
//! wire/      the messages and their bytes (the only place that names bincode); no IO
//! link/      one connection: handshake, cookie, TLS, reader, outbox/writer, pending table,
//!            the Responder; hands requests to a `Dispatch` it does not know the insides of
//! handlers/  the method table, actors, introspection: implements `Dispatch`
//! cluster/   links to other nodes (dial, accept, one per pair), seeds, membership, discovery
//! http/      the gateway (XML-RPC, JSON-RPC, /metrics) and clients of remote HTTP servers
//! node/      the Node handle: wires the layers together at start, runs the shutdown
//! ```
//!
//! `config.rs`, `error.rs` and `client.rs` (the caller's [`Peer`] and [`Client`]) belong to
//! no single layer. A call: [`Node::call`] finds or dials the [`Peer`], registers
//! the request id and its deadline, encodes header and arguments straight into the link's
//! outbox and awaits the reply (the sweeper answers `timeout`). The peer's reader decodes
//! the header and dispatches; the handler's responder encodes the response into that link's
//! outbox; our reader matches it by id. docs/ARCHITECTURE.md draws this at length;
//! docs/PROTOCOL.md gives the bytes.
#![warn(missing_docs, unreachable_pub)]

mod actors;
mod client;
mod cluster;
mod config;
mod error;
mod handlers;
#[cfg(feature = "gateway")]
mod http;
mod link;
mod node;
mod state;
/// The messages and their bytes, for the fuzzers, benches and protocol tests: not an API
/// (docs/PROTOCOL.md is the contract).
#[doc(hidden)]
pub mod wire;

#[cfg(feature = "gateway")]
#[doc(hidden)]
pub use http::fuzzing;
#[cfg(feature = "prometheus")]
pub use http::metrics::install_prometheus;
#[cfg(feature = "gateway")]
pub use http::remote;

pub use client::{CallOptions, Client, Peer};
pub use cluster::{Member, MemberEvent, MemberStatus, Target};
pub use config::{MulticastConfig, NodeConfig, TlsConfig};
pub use error::{RpcError, StartError};
pub use handlers::Registered;
pub use link::{current_trace, with_trace, PeerInfo};
pub use node::{IntoHandler, IntoStreamHandler, Node, NodeBuilder, RequestContext};
pub use wire::{ErrorKind, NodeId, Trace};

/// Actors: local ones ([`Node::actor`]), virtual actors that live wherever the cluster
/// places their key ([`Node::virtual_actor`], [`Node::actor_ref`]), process groups
/// ([`Node::group`]) and monitors ([`Node::monitor`]).
pub mod actor {
    pub use crate::actors::{
        Activation, ActorRef, Down, Group, GroupMember, Monitored, VirtualBuilder,
    };
    pub use crate::handlers::ActorBuilder;
}

/// Streams: the items a streaming handler reads ([`Items`](stream::Items)) and returns
/// ([`BoxStream`](stream::BoxStream)), and the caller's ends ([`Peer::call_stream`],
/// [`Peer::client_stream`], [`Peer::bidi_stream`]).
pub mod stream {
    pub use crate::client::{ItemSink, ItemStream, StreamOptions, StreamReply};
    pub use crate::handlers::{BoxStream, Items};
}

/// Services declared with [`service!`]: what the macro implements and registers, and what
/// each method says about itself.
pub mod service {
    pub use crate::handlers::{MethodInfo, Param, Registry, Service};
}

/// Methods whose types are known only at run time, for this repository's binding to Python
/// (`python/`): register a [`Function`](dynamic::Function) with [`Node::register`]; call
/// any method with [`Value`](dynamic::Value)s through [`Peer::call_json`]. Not a stable API.
#[doc(hidden)]
pub mod dynamic {
    pub use crate::handlers::dynamic::{Function, Method, Raised, Type, Value};
}

/// Membership's SWIM settings, for the simulation bench (`benches/swim_sim.rs`); not an API.
#[doc(hidden)]
pub mod simulation {
    pub use crate::cluster::membership::{swim_config, transmissions};
}

/// What the [`service!`] macro expands to needs; not an API.
#[doc(hidden)]
pub mod __private {
    pub use crate::handlers::infallible;
    pub use pastey::paste;
}
