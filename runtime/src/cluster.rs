//! The cluster as one node sees it: who is a member and in what state ([`membership`]: SWIM
//! over UDP), how a node joins ([`seeds`]) or finds others without seeds ([`discovery`]),
//! and its links to other nodes ([`links`], opened on demand and registered in [`peers`]
//! under the one-link-per-pair rule).
//!
//! The pieces talk one way: seeds and discovery tell membership where to announce itself,
//! links read the membership directory to find a member's address, and [`sync`] swaps
//! member lists over links now and then. Everything here stops
//! with the node's tokens. The methods the cluster answers (`system.peers`,
//! `system.members`, `system.gossip`) are registered by [`register_methods`].

pub(crate) mod discovery;
pub(crate) mod links;
pub(crate) mod membership;
pub(crate) mod peers;
pub(crate) mod seeds;
pub(crate) mod sync;
mod target;

use serde::{Deserialize, Serialize};

use crate::handlers::Handlers;
pub(crate) use links::Links;
use links::WeakLinks;
use membership::{Membership, Rumor, SyncState};

pub(crate) use membership::MemberSummary;
pub use membership::{Member, MemberEvent, MemberStatus};
pub use target::Target;

/// Whether the node has joined its cluster — through its seeds, or at once when it has
/// none: what `/ready` reports and [`crate::node::Node::joined`] waits for. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Joined(std::sync::Arc<tokio::sync::watch::Sender<bool>>);

impl Joined {
    pub(crate) fn new(already: bool) -> Self {
        Joined(std::sync::Arc::new(tokio::sync::watch::Sender::new(
            already,
        )))
    }

    #[cfg_attr(not(feature = "gateway"), allow(dead_code))] // read by the gateway
    pub(crate) fn is(&self) -> bool {
        *self.0.borrow()
    }

    /// Marks the node joined; true if it was not yet.
    pub(crate) fn mark(&self) -> bool {
        !self.0.send_replace(true)
    }

    /// Resolves once the node has joined.
    pub(crate) async fn wait(&self) {
        let mut joined = self.0.subscribe();
        // The sender lives in `self`, so this only ends when joined.
        let _ = joined.wait_for(|joined| *joined).await;
    }
}

/// An optional address for a log line: the address, or `none` (not `Some(..)`).
pub(crate) struct ShowAddr(pub(crate) Option<std::net::SocketAddr>);

impl std::fmt::Display for ShowAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => write!(f, "{addr}"),
            None => f.write_str("none"),
        }
    }
}

/// At most this many members are taken from one `system.gossip`.
const MAX_RUMORS: usize = 64;

/// One entry of `system.peers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PeerSummary {
    /// The peer's name.
    pub name: String,
    /// Its id, in hex.
    pub id: String,
    /// The address it listens on.
    pub addr: String,
    /// The protocol version the link speaks (absent from nodes of the release before).
    #[serde(default)]
    pub protocol: u16,
}

/// Registers `system.peers`, `system.members` and `system.gossip` (how peers tell each
/// other whom they see). The links are held weakly: the method table must not keep them.
pub(crate) fn register_methods(handlers: &Handlers, links: WeakLinks, membership: &Membership) {
    let weak = links.clone();
    handlers
        .register_fn("system.peers", move |(): ()| {
            let Some(links) = weak.upgrade() else {
                return Vec::new();
            };
            links
                .peers()
                .list()
                .into_iter()
                .map(|conn| {
                    let p = conn.peer();
                    PeerSummary {
                        name: p.name.clone(),
                        id: p.id.to_string(),
                        addr: p.addr.map(|a| a.to_string()).unwrap_or_default(),
                        protocol: p.protocol,
                    }
                })
                .collect::<Vec<_>>()
        })
        .help("system.peers() -> [{name, id, addr, protocol}]: the nodes this node has a live link to, and the protocol version each link speaks");
    handlers
        .register_fn(links::confirm::METHOD, move |nonce: crate::wire::Nonce| {
            links.upgrade().is_some_and(|links| links.greeted(&nonce))
        })
        .params(&["nonce"])
        .help("system.link.dialing(nonce) -> bool: whether this node is dialing the asker with a handshake it greeted with that nonce (how an acceptor checks a dialer is who it claims)");
    let m = membership.clone();
    handlers
        .register_fn("system.gossip", move |rumors: Vec<Rumor>| {
            m.announce(rumors.into_iter().take(MAX_RUMORS).map(|r| r.addr).collect())
        })
        .internal()
        .help(
            "system.gossip([member]): a node tells this one of members it may not know yet; this one announces itself to them (node-only)",
        );
    let m = membership.clone();
    handlers
        .register_async(sync::METHOD, move |theirs: SyncState| {
            let m = m.clone();
            async move {
                let ours = m.state().await;
                let _ = m.apply(theirs).await;
                Ok::<SyncState, String>(ours)
            }
        })
        .internal()
        .params(&["state"])
        .help("system.members.sync(members) -> members: two nodes swap what they know of the cluster, each keeping what is news (node-only)");
    let m = membership.clone();
    handlers
        .register_fn("system.members", move |(): ()| {
            m.members().iter().map(MemberSummary::from).collect::<Vec<_>>()
        })
        .help("system.members() -> [{name, addr, status, id}]: this node's view of the cluster, itself included");
}
