//! The callee's side of one request: the [`Responder`], which admits it under the link's
//! bounds and answers it exactly once, encoding the response straight into the link's outbox
//! — or, on the road to self ([`super::local`]), handing the answer's body to the waiting
//! caller.
//!
//! A responder dropped without answering (a handler task stopped at shutdown, an actor gone)
//! answers `shutdown` itself, so no caller waits for a reply that will never come. Until its
//! reply is written, a request counts against the link's and the node's in-flight bounds.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::future::AbortHandle;
use serde::Serialize;
use tokio::time::Instant;
use tracing::debug;

use super::connection::Shared;
use super::fault::{panic_message, Fault};
use super::local::{self, Local};
use super::meter::{record_call, Side};
use super::trace::{Context, Hop};
use super::Limits;
use crate::wire::ErrorKind;
use crate::wire::{self, CodecError, Encoding, FrameError, Header, RemoteError};

/// Where an answer goes: the outbox of the link the request came on, or — for a call on the
/// road to self (a virtual actor this node owns, its gateway's calls) — straight to the
/// waiting caller, with no frame on any link.
enum Back {
    Link(Arc<Shared>),
    Local(Local),
}

impl Back {
    fn limits(&self) -> &Limits {
        match self {
            Back::Link(link) => &link.limits,
            Back::Local(local) => &local.limits,
        }
    }

    fn peer(&self) -> &str {
        match self {
            Back::Link(link) => &link.peer.name,
            Back::Local(local) => local.lane.as_ref().map_or("this node", |l| &l.peer.name),
        }
    }

    fn max_frame(&self) -> usize {
        match self {
            Back::Link(link) => link.max_frame,
            Back::Local(_) => local::MAX_ANSWER,
        }
    }
}

/// Answers one request exactly once; see the module doc for what happens on drop.
pub(crate) struct Responder {
    back: Back,
    /// `None` for a cast: nothing is sent back.
    id: Option<u64>,
    encoding: Encoding,
    answered: bool,
    /// The method's label and when the request arrived, when metrics are recorded.
    meter: Option<(metrics::SharedString, Instant)>,
    /// For a traced request: its hop, recorded when it is answered.
    hop: Option<Box<Hop>>,
}

impl Responder {
    pub(super) fn new(link: Arc<Shared>, id: Option<u64>, encoding: Encoding) -> Self {
        // Both counters are released in `finish`, or for `inbound` by the writer once the reply
        // is written.
        link.inbound.fetch_add(1, Ordering::Relaxed);
        link.limits.node_inbound.fetch_add(1, Ordering::Relaxed);
        if link.is_client() {
            link.limits.client_inbound.fetch_add(1, Ordering::Relaxed);
        }
        link.in_flight.fetch_add(1, Ordering::Relaxed);
        Responder {
            back: Back::Link(link),
            id,
            encoding,
            answered: false,
            meter: None,
            hop: None,
        }
    }

    /// The responder of a call on the road to self ([`super::local`]): the answer goes
    /// down a channel. It counts against the node's in-flight bound (and shutdown waits for
    /// it) like any, and a lane's against the clients' share.
    pub(super) fn local(local: Local, encoding: Encoding) -> Self {
        Responder {
            back: Back::Local(local),
            id: Some(0),
            encoding,
            answered: false,
            meter: None,
            hop: None,
        }
    }

    /// How the answer is encoded (the request's encoding).
    pub(super) fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// The bounds this request counts in.
    pub(super) fn limits(&self) -> Arc<Limits> {
        match &self.back {
            Back::Link(link) => link.limits.clone(),
            Back::Local(local) => local.limits.clone(),
        }
    }

    /// Who sent the request: the peer at the link's other end; `None` for a call this node
    /// made to itself.
    pub(crate) fn caller(&self) -> Option<&crate::link::PeerInfo> {
        match &self.back {
            Back::Link(link) => Some(&link.peer),
            Back::Local(local) => local.lane.as_ref().map(|lane| &lane.peer),
        }
    }

    /// Records this request as a hop of the caller's trace (`parent`), answered by the
    /// handler of `method`; returns the context its handler runs in.
    pub(crate) fn trace(&mut self, parent: crate::wire::Trace, method: &str) -> Context {
        let hop = Hop::new(parent, method, self.back.peer());
        let context = hop.context.clone();
        self.hop = Some(Box::new(hop));
        context
    }

    /// Whether calls are being recorded for `/metrics`.
    pub(crate) fn metered(&self) -> bool {
        self.back.limits().metered
    }

    /// Records this request under `method` (a registered name: callers cannot grow the set
    /// of labels) when it is answered.
    pub(crate) fn meter(&mut self, method: metrics::SharedString) {
        self.meter = Some((method, Instant::now()));
    }

    /// Checks the link's bounds: refused while the node shuts down, or when the node or
    /// this link has too many requests in flight. Call it before running anything for the
    /// request, and answer a refusal with [`Responder::refuse`].
    #[inline]
    pub(crate) fn admit(&self) -> Result<(), Refused> {
        let limits = self.back.limits();
        if limits.closing.load(Ordering::Relaxed) {
            return Err(Refused::Closing);
        }
        // This responder already counts, hence `>`.
        if limits.node_inbound.load(Ordering::Relaxed) > limits.max_in_flight_node {
            return Err(Refused::Node(limits.max_in_flight_node));
        }
        let (inbound, client) = match &self.back {
            Back::Link(link) => (Some(link.inbound.load(Ordering::Relaxed)), link.is_client()),
            Back::Local(local) => (local.lane_inbound(), local.lane.is_some()),
        };
        if inbound.is_some_and(|n| n > limits.max_in_flight) {
            return Err(Refused::Link(limits.max_in_flight));
        }
        let clients = limits.client_inbound.load(Ordering::Relaxed);
        if client && clients > limits.max_in_flight_clients {
            return Err(Refused::Clients(limits.max_in_flight_clients));
        }
        Ok(())
    }

    /// The caller can no longer hear the answer: its link closed (or, on the road to self,
    /// it stopped waiting). A request still queued
    /// (an actor's mailbox) is dropped rather than run.
    pub(crate) fn is_gone(&self) -> bool {
        match &self.back {
            Back::Link(link) => link.is_closed(),
            Back::Local(local) => local.is_gone(),
        }
    }

    /// The longest this request may run, given the deadline its caller set (`None`: no
    /// deadline): the node's `max_call` bounds both.
    pub(crate) fn bound(
        &self,
        timeout: Option<std::time::Duration>,
    ) -> Option<std::time::Duration> {
        match (timeout, self.back.limits().max_call) {
            (Some(t), Some(max)) => Some(t.min(max)),
            (t, max) => t.or(max),
        }
    }

    /// Answers a request [`Responder::admit`] refused.
    pub(crate) fn refuse(self, why: Refused) {
        match why {
            Refused::Closing => self.fail(ErrorKind::Shutdown, "the callee is shutting down"),
            Refused::Node(max) => self.fail(
                ErrorKind::Overloaded,
                format!("more than {max} requests in flight on this node"),
            ),
            Refused::Link(max) => self.fail(
                ErrorKind::Overloaded,
                format!("more than {max} requests in flight on this connection"),
            ),
            Refused::Clients(max) => self.fail(
                ErrorKind::Overloaded,
                format!("clients have more than {max} requests in flight on this node (the rest is kept for nodes)"),
            ),
        }
    }

    /// Sends the handler's result, encoded straight into the link's outbox (or, locally,
    /// as the body alone down the caller's channel).
    pub(crate) fn reply<R: Serialize + ?Sized>(mut self, result: Result<&R, RemoteError>) {
        // Encoding runs user code (Serialize) that may panic: the responder is marked answered
        // only afterwards, so a panic here still answers from `drop`.
        let mut outcome = "ok";
        let queued = match self.id {
            None => {
                if let Err(error) = &result {
                    outcome = error.kind.as_str();
                    debug!(peer = %self.back.peer(), %error, "cast failed");
                }
                false
            }
            Some(id) => {
                // The result's Serialize is user code: a panic there is the handler's panic.
                let sent = result.and_then(|value| {
                    catch_unwind(AssertUnwindSafe(|| self.push_ok(id, value))).unwrap_or_else(|p| {
                        Err(RemoteError::new(
                            ErrorKind::Panicked,
                            format!("encoding the result panicked: {}", panic_message(&*p)),
                        ))
                    })
                });
                sent.unwrap_or_else(|error| {
                    outcome = error.kind.as_str();
                    self.push_error(id, error)
                })
            }
        };
        self.finish(queued, outcome);
    }

    /// Registers the task answering this request, so the caller's `Cancel` (or, locally, the
    /// caller giving up) can abort it;
    /// the registration ends when the returned guard drops. Casts cannot be cancelled.
    pub(crate) fn track(&self, abort: AbortHandle) -> Option<Tracked> {
        match (&self.back, self.id) {
            (Back::Link(link), Some(id)) => {
                link.running.insert(id, abort);
                Some(Tracked(Registration::Link {
                    link: link.clone(),
                    id,
                }))
            }
            (Back::Local(local), Some(_)) => {
                *local.running.lock().unwrap_or_else(|e| e.into_inner()) = Some(abort);
                Some(Tracked(Registration::Local(local.running.clone())))
            }
            (_, None) => None,
        }
    }

    /// The caller cancelled: release the request without answering it.
    pub(crate) fn abandon(mut self) {
        self.finish(false, "cancelled");
    }

    /// Answers with what a handler produced: its value, `application` for its own error,
    /// `panicked` for a panic.
    pub(crate) fn answer<R: Serialize, E: Fault>(
        self,
        ran: Result<Result<R, E>, Box<dyn Any + Send>>,
    ) {
        match ran {
            Ok(Ok(value)) => self.reply(Ok(&value)),
            Ok(Err(e)) => self.reply::<()>(Err(e.into_error())),
            Err(payload) => self.fail(ErrorKind::Panicked, panic_message(&*payload)),
        }
    }

    /// Answers with a reply another node gave (a call this node forwarded): its bytes as
    /// they came, in their encoding.
    pub(crate) fn reply_raw(mut self, reply: Result<(Encoding, Bytes), RemoteError>) {
        let Some(id) = self.id else {
            return self.finish(false, "ok");
        };
        if let Back::Local(local) = &self.back {
            let outcome = match &reply {
                Ok(_) => "ok",
                Err(error) => error.kind.as_str(),
            };
            local.send(reply);
            return self.finish(false, outcome);
        }
        let (queued, outcome) = match reply {
            Ok((encoding, body)) => {
                let header = Header::Response {
                    id,
                    outcome: Ok(encoding),
                };
                let max = self.back.max_frame();
                let pushed = self
                    .push(|buf| wire::append_frame_raw(buf, &header, &body, max).map_err(|_| ()));
                match pushed {
                    Ok(queued) => (queued, "ok"),
                    Err(()) => {
                        let error = RemoteError::new(
                            ErrorKind::FrameTooLarge,
                            format!(
                                "the result takes {} bytes, over the {max}-byte frame limit",
                                body.len()
                            ),
                        );
                        (
                            self.push_error(id, error),
                            ErrorKind::FrameTooLarge.as_str(),
                        )
                    }
                }
            }
            Err(error) => {
                let kind = error.kind.as_str();
                (self.push_error(id, error), kind)
            }
        };
        self.finish(queued, outcome);
    }

    /// Sends an error.
    pub(crate) fn fail(self, kind: ErrorKind, message: impl Into<String>) {
        self.reply::<()>(Err(RemoteError::new(kind, message)));
    }

    /// Sends the response frame `encode` writes into the link's outbox; false if it could
    /// not leave. (A local answer never becomes a frame.)
    fn push<E>(&self, encode: impl FnOnce(&mut BytesMut) -> Result<(), E>) -> Result<bool, E> {
        match &self.back {
            Back::Link(link) => link.outbox.push(true, encode),
            Back::Local(_) => Ok(false),
        }
    }

    /// Queues the success response; false if not queued on a link (a local answer is sent
    /// at once, and nothing waits for a writer).
    fn push_ok<R: Serialize + ?Sized>(&self, id: u64, value: &R) -> Result<bool, RemoteError> {
        if let Back::Local(local) = &self.back {
            return local.send_value(self.encoding, value).map(|_| false);
        }
        let header = Header::Response {
            id,
            outcome: Ok(self.encoding),
        };
        let (encoding, max) = (self.encoding, self.back.max_frame());
        let cannot_encode = |e: CodecError| {
            RemoteError::new(
                ErrorKind::Protocol,
                format!("cannot encode the result: {e}"),
            )
        };
        self.push(
            |buf| match wire::append_frame(buf, &header, encoding, value, max) {
                Ok(()) => Ok(()),
                Err(FrameError::Encode(e)) => Err(cannot_encode(e)),
                Err(FrameError::TooLarge(size)) => Err(RemoteError::new(
                    ErrorKind::FrameTooLarge,
                    format!("the result takes {size} bytes, over the {max}-byte frame limit"),
                )),
            },
        )
    }

    /// Sends an error response, its message cut to fit the caller's frame limit (and 4 KiB)
    /// and its data kept when it fits as well; false if not queued on a link.
    fn push_error(&self, id: u64, mut error: RemoteError) -> bool {
        let max = self.back.max_frame();
        let room = max.saturating_sub(ERROR_OVERHEAD).min(MAX_ERROR_MESSAGE);
        truncate_on_char_boundary(&mut error.message, room);
        // The error's data goes after the header when it fits the same bound as a message;
        // without it the caller still has the message.
        let fits =
            |d: &Bytes| d.len() <= MAX_ERROR_MESSAGE && d.len() + room + ERROR_OVERHEAD <= max;
        let data = error.data.take().filter(fits);
        if let Back::Local(local) = &self.back {
            error.data = data;
            local.send(Err(error));
            return false;
        }
        let header = Header::Response {
            id,
            outcome: Err(error),
        };
        let pushed = self.push(|buf| {
            // (A frame that does not fit leaves `buf` as it was.)
            let with_data = (data.as_ref())
                .is_some_and(|data| wire::append_frame_raw(buf, &header, data, max).is_ok());
            // Without its data if need be: an error always gets to the caller.
            (with_data || wire::append_header(buf, &header, max))
                .then_some(())
                .ok_or(())
        });
        pushed.unwrap_or(false)
    }

    /// Releases the counters: `inbound` now unless the writer will, once the reply is out.
    fn finish(&mut self, queued: bool, outcome: &'static str) {
        if let Some(hop) = self.hop.take() {
            hop.finish(outcome);
        }
        if let Some((method, arrived)) = self.meter.take() {
            if let Some(calls) = &self.back.limits().calls {
                calls.record(&method, outcome == "ok", arrived);
            }
            record_call(Side::Served, method, outcome, arrived);
        }
        self.answered = true;
        match &self.back {
            Back::Link(link) => {
                link.in_flight.fetch_sub(1, Ordering::Relaxed);
                if !queued {
                    link.release_inbound(1);
                }
            }
            // Answered (or never to be): nothing waits for a writer.
            Back::Local(local) => local.release(),
        }
    }
}

/// Why [`Responder::admit`] refused a request.
pub(crate) enum Refused {
    /// The node is shutting down.
    Closing,
    /// The node has more than this many requests in flight.
    Node(usize),
    /// This link has more than this many requests in flight.
    Link(usize),
    /// Clients together have more than this many requests in flight on this node.
    Clients(usize),
}

/// See [`Responder::track`].
pub(crate) struct Tracked(Registration);

enum Registration {
    Link { link: Arc<Shared>, id: u64 },
    Local(Arc<std::sync::Mutex<Option<AbortHandle>>>),
}

impl Drop for Tracked {
    fn drop(&mut self) {
        match &self.0 {
            Registration::Link { link, id } => link.running.remove(*id),
            Registration::Local(running) => {
                running.lock().unwrap_or_else(|e| e.into_inner()).take();
            }
        }
    }
}

/// Error messages are cut to this many bytes.
const MAX_ERROR_MESSAGE: usize = 4096;
/// Room for an error response's header besides the message.
const ERROR_OVERHEAD: usize = 64;

fn truncate_on_char_boundary(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if !self.answered {
            let queued = self.id.is_some_and(|id| {
                let error = RemoteError::new(
                    ErrorKind::Shutdown,
                    "the handler was stopped before it answered",
                );
                self.push_error(id, error)
            });
            self.finish(queued, "shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::truncate_on_char_boundary;

    #[test]
    fn truncation_never_splits_a_character() {
        let mut s = "é".repeat(10);
        truncate_on_char_boundary(&mut s, 5);
        assert_eq!(s, "éé");
        let mut short = "abc".to_owned();
        truncate_on_char_boundary(&mut short, 10);
        assert_eq!(short, "abc");
    }
}
