//! Claims checked out of band. A dialer that claims the identity of a node this one knows
//! alive — its id, its name or its listen address, as a live member or a registered link —
//! is not believed on the claim alone: anyone can copy all of them (and the incarnation)
//! from that node's greeting. The acceptor asks the node at the claimed member's advertised
//! address, over a short client connection, whether it is the dialer of this very handshake:
//! `system.link.dialing` with the nonce this node greeted the dialer with, which only the
//! real dialer has seen. An impostor cannot make the real node vouch for a handshake it is
//! not in, whether or not the two nodes hold a link.
//!
//! The dialer's side: the nonces of the greetings its dials in progress received
//! ([`Greeted`]), from the greeting until the verdict.
//!
//! A node of the release before (protocol 3) cannot answer; one that greets with the
//! claimed id is believed (docs/SECURITY.md, mixed versions). So is one that greets with the
//! claimed id and then refuses the question because it is shutting down: a stopping node
//! still dials (to hand its activations over) but takes no new clients. When the claimed
//! member's address does not answer at all, the dialer must vouch for itself at the address
//! it claims: it is then not taking the place of a node that can be reached.

use std::net::SocketAddr;
use std::sync::Arc;

use dashmap::DashSet;
use tracing::debug;

use super::Links;
use crate::error::RpcError;
use crate::link::transport::{self, Local};
use crate::link::Connection;
use crate::wire::{self, Encoding, Identity, NodeId, Nonce};

/// What a stopping node answers a new client (`links/accept.rs`).
pub(super) const STOPPING: &str = "it is shutting down";

/// The method a node answers for an acceptor that checks a claim (any caller may ask: the
/// answer says only whether a random nonce is one of its handshakes in progress).
pub(crate) const METHOD: &str = "system.link.dialing";

/// The acceptor nonces of greetings this node's dials in progress received.
#[derive(Default)]
pub(crate) struct Greeted(DashSet<Nonce>);

impl Greeted {
    /// Records `nonce` until the returned guard drops (the dial's verdict is in).
    pub(super) fn hold(self: &Arc<Self>, nonce: Nonce) -> GreetedGuard {
        self.0.insert(nonce);
        GreetedGuard {
            set: self.clone(),
            nonce,
        }
    }

    /// Whether a dial in progress was greeted with `nonce`.
    pub(crate) fn contains(&self, nonce: &Nonce) -> bool {
        self.0.contains(nonce)
    }
}

pub(super) struct GreetedGuard {
    set: Arc<Greeted>,
    nonce: Nonce,
}

impl Drop for GreetedGuard {
    fn drop(&mut self) {
        self.set.0.remove(&self.nonce);
    }
}

/// What the node at an address said about a handshake.
enum Answer {
    /// It is the dialer (`id`), or a node of the release before with that id, which cannot
    /// say more.
    Vouches,
    /// Another node listens there, or it is not dialing this node with that nonce.
    Denies(String),
    /// Nothing answered there.
    Unreachable(String),
}

impl Links {
    /// Checks `them`'s claim as described in the module doc; the error says why it is not
    /// believed.
    pub(super) async fn confirm_claim(&self, them: &Identity, nonce: Nonce) -> Result<(), String> {
        let Some(claimed) = them.listen.as_deref() else {
            return Ok(()); // a plain client claims no node's identity
        };
        let claimed: SocketAddr = claimed
            .parse()
            .map_err(|_| format!("its listen address `{claimed}` is not IP:PORT"))?;
        let Some(holder) = self.live_holder(them, claimed) else {
            return Ok(()); // it claims no live node's identity: a newcomer
        };
        match self.ask(holder, them.id, nonce).await {
            Answer::Vouches => Ok(()),
            Answer::Denies(why) => Err(why),
            Answer::Unreachable(why) if holder == claimed => Err(format!(
                "it claims to listen at {claimed}, where nothing answers: {why}"
            )),
            Answer::Unreachable(why) => {
                debug!(%holder, %why, "the claimed member does not answer; asking the dialer");
                match self.ask(claimed, them.id, nonce).await {
                    Answer::Vouches => Ok(()),
                    Answer::Denies(why) | Answer::Unreachable(why) => Err(why),
                }
            }
        }
    }

    /// The advertised address of the live member or registered link whose id, name or
    /// address `them` claims, if any.
    fn live_holder(&self, them: &Identity, claimed: SocketAddr) -> Option<SocketAddr> {
        let peers = self.peers();
        let linked = peers.get(them.id).or_else(|| peers.by_name(&them.name));
        if let Some(addr) = linked.and_then(|conn| conn.peer().addr) {
            return Some(addr);
        }
        let view = self.inner.directory.snapshot();
        view.members
            .iter()
            .filter(|m| m.status.is_live() && m.id != self.inner.identity.id)
            .find(|m| m.id == them.id || m.name == them.name || m.addr == Some(claimed))
            .and_then(|m| m.addr)
    }

    /// Asks the node at `addr` whether it is `id`, dialing this node with a greeting that
    /// carried `nonce`. Bounded by half the handshake timeout (the dialer waits for our
    /// verdict for the whole of it).
    async fn ask(&self, addr: SocketAddr, id: NodeId, nonce: Nonce) -> Answer {
        let config = &self.inner.config;
        let timeout = config.handshake_timeout / 2;
        // A client of the node there, with this node's credentials.
        let me = &self.inner.identity;
        let asker = Identity {
            id: NodeId::random(),
            name: me.name.clone(),
            listen: None,
            max_frame: me.max_frame,
            incarnation: 0,
        };
        let local = Local {
            identity: &asker,
            timeout,
            ..self.local()
        };
        let asked = async {
            let mut socket = transport::connect(addr, timeout, local).await?;
            let greeting = transport::read_greeting(&mut socket, local).await?;
            let there = &greeting.identity;
            if there.id != id {
                let why = format!(
                    "it claims to be node {id}, but the node at {addr} is {} (id {})",
                    there.name, there.id
                );
                return Ok(Answer::Denies(why));
            }
            if socket.version < 4 {
                return Ok(Answer::Vouches); // the release before cannot say more
            }
            match transport::introduce(&mut socket, local, &greeting).await {
                Ok(true) => {}
                Ok(false) => {
                    let why = format!("{addr} answered a client's hello with `Duplicate`");
                    return Err(RpcError::Protocol(why));
                }
                Err(RpcError::Refused { reason, .. }) if reason == STOPPING => {
                    return Ok(Answer::Vouches);
                }
                Err(e) => return Err(e),
            }
            let conn = self.start_link(socket, there, true, None);
            let reply = ask_on(&conn, nonce, timeout).await;
            conn.close("asked", false);
            Ok(match reply? {
                true => Answer::Vouches,
                false => Answer::Denies(format!(
                    "{} at {addr} says it is not the one dialing this node: an impostor",
                    there.name
                )),
            })
        };
        match tokio::time::timeout(timeout, asked).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e @ RpcError::PeerUnavailable { .. })) => Answer::Unreachable(e.to_string()),
            Ok(Err(e)) => Answer::Denies(format!("{addr} could not vouch for it: {e}")),
            Err(_) => Answer::Unreachable(format!("{addr} did not answer within {timeout:?}")),
        }
    }
}

async fn ask_on(
    conn: &Connection,
    nonce: Nonce,
    timeout: std::time::Duration,
) -> Result<bool, RpcError> {
    let (encoding, body) = conn
        .request(METHOD, Encoding::Bincode, &nonce, timeout, false, None)
        .await?;
    wire::codec::decode_result::<bool>(encoding, &body)
        .map_err(|e| RpcError::Protocol(format!("`{METHOD}` answered something not a bool: {e}")))
}
