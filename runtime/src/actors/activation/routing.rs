//! The calls that leave this node for a key: forwarding a client's call to the owner, and
//! the hand-over handshake between a new owner and the previous one (claim and release).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::debug;

use super::{placement, Call, Kind, Leaving, Msg, NO_DEADLINE};
use crate::actors::{OWNER, RELEASE};
use crate::cluster::membership::Host;
use crate::error::RpcError;
use crate::wire::ErrorKind;
use crate::wire::{Encoding, RemoteError};

impl<S: Send + 'static> Kind<S> {
    /// The same call, to the owner, retried while the cluster's view settles.
    pub(super) async fn forward(self: Arc<Self>, key: Arc<str>, call: Call<S>) {
        let incoming = &call.call;
        let deadline = incoming
            .deadline
            .unwrap_or_else(|| Instant::now() + NO_DEADLINE);
        let method = format!("{}/{key}", call.entry.name);
        let mut backoff = Duration::from_millis(5);
        // Where the last owner tried said the key lives, if that differs from our view.
        let mut hint: Option<Host> = None;
        let reply = loop {
            let Some(owner) = hint.take().or_else(|| self.owner(&key)) else {
                break Err(RemoteError::new(ErrorKind::Moved, "no member hosts it"));
            };
            if owner.id == self.ctx.me {
                return self.local(key, Msg::Call(Box::new(call)));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = async {
                let conn = self.ctx.link(owner.id, owner.addr).await?;
                conn.request_raw(&method, incoming.encoding, &incoming.body, left)
                    .await
            };
            match attempt.await {
                Err(e) if retryable(&e) && Instant::now() + backoff < deadline => {
                    debug!(%method, owner = %owner.id, error = %e, "forwarding again");
                    // The owner of our view places the key elsewhere in its own: ask it
                    // where, and go there next. Our view may lag for long (a stopping
                    // node's no longer changes), theirs is the one that refused.
                    if e.kind() == ErrorKind::Moved {
                        hint = self.ask_where(owner, &key, left).await;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(200));
                }
                Err(e) => break Err(e.to_remote()),
                Ok(reply) => break Ok(reply),
            }
        };
        call.call.responder.reply_raw(reply);
    }

    /// Where `at` places `key` (`system.actors.owner`), if that is a live member of this
    /// node's view other than `at` itself.
    async fn ask_where(&self, at: Host, key: &str, left: Duration) -> Option<Host> {
        let timeout = left.min(Duration::from_secs(1));
        let conn = self.ctx.link(at.id, at.addr).await.ok()?;
        let args = (&*self.name, key);
        let (encoding, body) =
            (conn.request(OWNER, Encoding::Bincode, &args, timeout, false, None))
                .await
                .ok()?;
        let name = crate::client::decode_typed::<Option<String>>(OWNER, encoding, &body).ok()??;
        let snapshot = self.ctx.directory.snapshot();
        let member = snapshot.by_name(&name)?;
        let host = Host {
            id: member.id,
            addr: member.addr?,
        };
        (member.status.is_live() && host.id != at.id).then_some(host)
    }

    /// Asks the node that owned `key` before this one (the runner-up) to let it go, so the
    /// key's state is saved there before it is loaded here.
    pub(super) async fn claim(&self, key: &str) -> Result<(), String> {
        let hosts = self.ctx.directory.snapshot().hosts(&self.name);
        let hash = placement::key_hash(&self.name, key);
        let Some(before) = placement::runner_up(hash, hosts.iter().map(|h| h.id), self.ctx.me)
        else {
            return Ok(()); // the only host
        };
        let Some(addr) = hosts.iter().find(|h| h.id == before).map(|h| h.addr) else {
            return Ok(());
        };
        let timeout = self.ctx.release_timeout;
        let ask = async {
            let conn = self.ctx.link(before, addr).await?;
            conn.request(
                RELEASE,
                Encoding::Bincode,
                &(&*self.name, key),
                timeout,
                false,
                None,
            )
            .await
        };
        let answer = ask.await.and_then(|(encoding, body)| {
            crate::client::decode_typed::<Option<String>>(RELEASE, encoding, &body)
        });
        match answer {
            Ok(None) => Ok(()),
            // It still owns the key in its view: not ours yet.
            Ok(Some(refusal)) => Err(refusal),
            // Gone or cut off: it cannot serve the key either (see docs/ACTORS.md).
            Err(e) => {
                debug!(kind = %self.name, %key, peer = %addr, error = %e, "could not ask the previous owner");
                Ok(())
            }
        }
    }

    /// The previous owner's side of [`Self::claim`]: lets `key` go unless this node still
    /// owns it in its own view, and then says why not.
    pub(crate) async fn release(&self, key: &str) -> Option<String> {
        if self.owner(key).is_some_and(|o| o.id == self.ctx.me) {
            return Some(format!(
                "node {} still owns `{}/{key}` in its view",
                self.ctx.me, self.name
            ));
        }
        self.leave(key, Leaving::Moved).await;
        None
    }
}

/// Nothing ran, so another attempt is safe: the owner moved, or could not be reached.
fn retryable(e: &RpcError) -> bool {
    matches!(e.kind(), ErrorKind::Moved | ErrorKind::PeerUnavailable)
}
