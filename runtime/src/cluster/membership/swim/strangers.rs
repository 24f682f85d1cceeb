//! Strangers without a cookie. Anyone may join a cluster that has no cookie, but only as a
//! node that is where it says. A datagram from a sender this node does not know, arriving
//! from another address than the one it claims (a forger, or a real node behind a proxy or
//! NAT), is not handed to foca until the node listening at the claimed address greets this
//! node, over TCP, with the sender's id. A real node is then believed and joins with its
//! next datagram (seeds and announces are retried); a forger gets nothing, and a victim whose
//! address it claims gets one connection attempt per window instead of a member list per
//! forged datagram.
//!
//! Bounded: at most [`MAX_CHECKS`] addresses are checked or remembered at once, each check
//! within [`CHECK_TIMEOUT`]; the checks are tasks of the node's, ended with membership.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::Actor;
use crate::wire::swim::SwimId;
use crate::wire::{self, Greeting, NodeId};

/// Addresses checked (or recently failed) at once; beyond it, strangers wait.
pub(super) const MAX_CHECKS: usize = 1024;

/// How long a check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long an address is not checked again after a check started.
const RECHECK_AFTER: Duration = Duration::from_secs(5);

/// Strangers vouched for by the node at their address, and addresses being checked.
pub(super) struct Strangers {
    /// Checks started, by address: when the address may be checked again.
    checked: HashMap<SocketAddr, Instant>,
    /// Ids the node at their claimed address greeted with (written by the checks).
    vouched: Arc<Mutex<HashMap<NodeId, SocketAddr>>>,
    /// The node's tasks, which the checks join, and the membership's stop token.
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Strangers {
    pub(super) fn new(tasks: TaskTracker, stop: CancellationToken) -> Self {
        Strangers {
            checked: HashMap::new(),
            vouched: Arc::default(),
            tasks,
            stop,
        }
    }
}

impl Actor {
    /// Whether a datagram from `src`, arriving from `from`, goes to foca: a known member's
    /// always, a stranger's when it is at the address it claims or the node there vouched
    /// for it (a check is started otherwise). Always true under a cookie, which vouches for
    /// the sender.
    pub(super) fn admits(&mut self, src: &SwimId, from: SocketAddr) -> bool {
        if self.cookie.is_some()
            || src.addr == from
            || self.directory.snapshot().by_id(src.id).is_some()
        {
            return true;
        }
        let strangers = &mut self.strangers;
        let vouched = strangers.vouched.lock().unwrap_or_else(|e| e.into_inner());
        if vouched.get(&src.id) == Some(&src.addr) {
            return true;
        }
        drop(vouched);
        let now = Instant::now();
        if strangers.checked.len() >= MAX_CHECKS {
            strangers.checked.retain(|_, again| *again > now);
            let mut vouched = strangers.vouched.lock().unwrap_or_else(|e| e.into_inner());
            if vouched.len() >= MAX_CHECKS {
                vouched.clear(); // the members among them are known by now
            }
        }
        let due = strangers
            .checked
            .get(&src.addr)
            .is_none_or(|again| *again <= now);
        if due && strangers.checked.len() < MAX_CHECKS {
            strangers.checked.insert(src.addr, now + RECHECK_AFTER);
            let check = check(src.addr, src.id, strangers.vouched.clone());
            let stop = strangers.stop.clone();
            strangers.tasks.spawn(async move {
                tokio::select! {
                    _ = check => {}
                    _ = stop.cancelled() => {}
                }
            });
        }
        if let Some(more) = self.dropped.admit() {
            debug!(%from, claimed = %src.addr, more, "a stranger not at the address it claims: asking the node there");
        }
        false
    }
}

/// Reads the greeting of the node listening at `addr`; records `id` as vouched for if the
/// greeting carries it.
async fn check(addr: SocketAddr, id: NodeId, vouched: Arc<Mutex<HashMap<NodeId, SocketAddr>>>) {
    let greeting = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let len = stream.read_u32().await.ok()? as usize;
        if len > 16 << 10 {
            return None;
        }
        let mut payload = vec![0; len];
        stream.read_exact(&mut payload).await.ok()?;
        wire::decode_handshake::<Greeting>(&payload).ok()
    };
    let there = tokio::time::timeout(CHECK_TIMEOUT, greeting)
        .await
        .ok()
        .flatten();
    match there {
        Some(greeting) if greeting.identity.id == id => {
            let mut vouched = vouched.lock().unwrap_or_else(|e| e.into_inner());
            vouched.insert(id, addr);
        }
        _ => debug!(%addr, %id, "the node at the address a stranger claims does not vouch for it"),
    }
}
