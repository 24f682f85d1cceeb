//! The acceptor's side of a node's links: the accept loop (with its cap on connections
//! still in their handshake), the handshake, and who is refused (a name taken, this node's
//! own name, a node shutting down). Stops with the intake token.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use super::{name_conflict, Links};
use crate::link::transport::{self, HandshakeFailure, Introduced};
use crate::link::LogLimit;
use crate::wire::{Identity, Verdict};

impl Links {
    /// Accepts sockets on `listener` until the intake token is cancelled. At most
    /// `max_handshakes` sockets may be in their handshake at once (each is bounded by the
    /// handshake timeout); beyond that new ones are closed at once, so silent sockets cost a
    /// bounded number of descriptors.
    pub(crate) async fn accept_loop(self, listener: TcpListener) {
        let max = self.inner.config.max_handshakes;
        let slots = Arc::new(tokio::sync::Semaphore::new(max));
        let refusals = LogLimit::default();
        loop {
            let accepted = tokio::select! {
                _ = self.inner.intake.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, _)) => {
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        if let Some(more) = refusals.admit() {
                            warn!(
                                limit = max,
                                more, "too many connections in their handshake; closing new ones"
                            );
                        }
                        continue;
                    };
                    let admit = self.clone().admit(stream);
                    self.inner.ctx.tasks.spawn(async move {
                        admit.await;
                        drop(slot);
                    });
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Runs the acceptor's side of the handshake on a new socket.
    async fn admit(self, stream: TcpStream) {
        let remote = stream
            .peer_addr()
            .map_or_else(|_| "?".to_owned(), |a| a.to_string());
        let mut introduced = match transport::accept(stream, self.local()).await {
            Ok(introduced) => introduced,
            Err(HandshakeFailure::Closed) => {
                return debug!("a dialer hung up during the handshake")
            }
            Err(HandshakeFailure::Unauthenticated(reason)) => {
                if let Some(more) = self.inner.failures.admit() {
                    warn!(%remote, %reason, more, "refused an unauthenticated link");
                }
                return;
            }
            Err(HandshakeFailure::Failed(reason)) => {
                if let Some(more) = self.inner.failures.admit() {
                    warn!(%remote, %reason, more, "handshake failed");
                }
                return;
            }
        };
        let them = introduced.hello.identity.clone();
        if let Some(refusal) = self.refusal(&them) {
            warn!(peer = %them.name, %remote, reason = %refusal.ours, "refused a link");
            let verdict = Verdict::Refuse(refusal.theirs);
            let _ = transport::refuse(&mut introduced, self.local(), verdict).await; // best effort
            return;
        }
        let nonce = introduced.transcript.acceptor_nonce;
        if let Err(why) = self.confirm_claim(&them, nonce).await {
            warn!(peer = %them.name, %remote, reason = %why, "refused a link: its claim is not confirmed");
            let theirs = format!("this node could not confirm the identity it claims: {why}");
            let _ = transport::refuse(&mut introduced, self.local(), Verdict::Refuse(theirs)).await;
            return;
        }
        let accept = match transport::welcome(self.local(), &introduced, Verdict::Accept) {
            Ok(frame) => frame,
            Err(reason) => return warn!(%reason, "cannot encode the handshake reply"),
        };
        let Introduced { socket, .. } = introduced;
        if them.listen.is_none() {
            self.start_link(socket, &them, false, Some(accept));
            return;
        }
        let peer = transport::peer_info(&them, &socket);
        let verdict = {
            let admission = self.peers().admission();
            let verdict = admission.inbound_verdict(&peer);
            if verdict == Verdict::Accept {
                let conn = self.start_link(socket, &them, false, Some(accept));
                admission.insert(conn);
                return;
            }
            verdict
        };
        debug!(peer = %peer.name, "simultaneous dial: keeping the other link");
        let mut introduced = Introduced {
            socket,
            hello: introduced.hello,
            transcript: introduced.transcript,
            by_client_secret: false,
        };
        let _ = transport::refuse(&mut introduced, self.local(), verdict).await;
        // best effort
    }

    /// Why a dialer must be turned away, if it must.
    fn refusal(&self, them: &Identity) -> Option<Refusal> {
        let me = &self.inner.identity;
        let name = &them.name;
        if self.closing() {
            return Some(Refusal::same(super::confirm::STOPPING));
        }
        let (held, max) = (
            self.peers().count() + self.clients(),
            self.inner.config.max_connections,
        );
        if held >= max {
            return Some(Refusal {
                theirs: format!("it holds {held} links, its --max-connections: try later"),
                ours: format!("this node holds {held} links, its --max-connections"),
            });
        }
        if them.id == me.id {
            return Some(Refusal::same("the dialer has this node's own id"));
        }
        if them.listen.is_some() && them.listen == me.listen {
            return Some(Refusal {
                theirs: "it claims to listen at this node's own address".to_owned(),
                ours: "the dialer claims this node's own address".to_owned(),
            });
        }
        if them.listen.is_some() && *name == me.name {
            return Some(Refusal {
                theirs: format!("it is itself named `{name}`: choose another --name for this node"),
                ours: format!("the dialer is named `{name}` like this node"),
            });
        }
        let holder = self
            .peers()
            .by_name(name)
            .filter(|other| other.peer().id != them.id)?
            .peer()
            .id;
        them.listen.is_some().then(|| Refusal {
            theirs: format!(
                "{}: choose another --name for this node",
                name_conflict(name, holder)
            ),
            ours: name_conflict(name, holder),
        })
    }
}

/// A refusal in the dialer's words (it is sent) and in ours (it is logged).
struct Refusal {
    theirs: String,
    ours: String,
}

impl Refusal {
    fn same(reason: &str) -> Self {
        Refusal {
            theirs: reason.to_owned(),
            ours: reason.to_owned(),
        }
    }
}
