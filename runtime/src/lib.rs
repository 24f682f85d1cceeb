//! meshrpc: every node is a tokio actor system that serves registered methods over framed
//! TCP and calls its peers over the same links.
//!
//! ```text
//! Node ──owns── root token + task tracker ──spawns── accept loop, seed loops
//!   │                                                 │ handshake (transport)
//!   ├── Methods (name → handler)                      ▼
//!   ├── Peers (peer id → Connection) ◄──admission── new link
//!   └── clients (plain callers' links)
//! Connection = reader, writer and sweeper tasks + outbox + pending table (id → oneshot)
//!   reader: Response → pending waiter;  Request/Cast → serve::dispatch → handler
//!   handler: sync fn (inline) | async fn (task) | actor method (mailbox → actor task)
//!   handler answers through its Responder → outbox buffer → writer → socket
//! ```
//!
//! A call: [`Node::call`] finds or dials the [`Peer`], registers the request id and its
//! deadline, encodes header and arguments straight into the link's outbox and awaits the
//! reply (the sweeper answers `timeout`). The peer's reader decodes the header, finds the
//! method, and the handler's responder encodes the response into that link's outbox; our
//! reader matches it by id.
//! docs/ARCHITECTURE.md draws this at length; docs/PROTOCOL.md gives the bytes.
#![warn(missing_docs, unreachable_pub)]

mod actor;
mod auth;
pub mod bench;
mod builtins;
mod client;
mod config;
mod connection;
mod discovery;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod gateway;
mod links;
mod membership;
mod methods;
mod node;
mod outbox;
mod peers;
mod pending;
pub mod remote;
mod serve;
pub mod tls;
mod transport;
pub mod wire;

pub use actor::ActorBuilder;
pub use builtins::PeerSummary;
pub use client::{CallOptions, Client, Peer, PeerInfo, Target};
pub use config::NodeConfig;
pub use discovery::MulticastConfig;
pub use error::{ErrorKind, RpcError, StartError};
pub use membership::{Member, MemberEvent, MemberSummary, Status};
pub use methods::{Method, Registered};
pub use node::{Node, NodeBuilder, WeakNode, WhoAmI};
pub use tls::TlsConfig;
pub use wire::NodeId;
