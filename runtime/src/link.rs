//! One connection between two endpoints, from the TCP socket to the reply: the handshake
//! ([`transport`], with the cookie in [`auth`] and TLS in [`tls`]), then the link's three
//! tasks — reader ([`reader`]), writer ([`outbox`]) and deadline sweeper ([`pending`]) —
//! around the [`Connection`] handle callers use, and the [`Responder`] that answers each
//! request the reader hands on.
//!
//! This layer knows nothing of methods: the reader hands every admitted request to a
//! [`Dispatch`] (the handlers implement it) and every link of a node shares one [`LinkCtx`].
//! A link stops when its token is cancelled, its socket closes, or its peer stays silent.

pub(crate) mod auth;
mod connection;
mod fault;
mod flow;
pub(crate) mod frames;
pub(crate) mod local;
#[cfg(test)]
pub(crate) mod memory;
mod meter;
mod responder;
mod running;
mod sniff;
mod throttle;
#[cfg(feature = "tls")]
pub(crate) mod tls;
#[cfg(not(feature = "tls"))]
#[path = "link/tls_off.rs"]
pub(crate) mod tls;
pub(crate) mod trace;
pub(crate) mod transport;

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;

use bytes::Bytes;
use tokio_util::task::TaskTracker;

use crate::wire::Encoding;
use crate::wire::ErrorKind;

pub(crate) use connection::pending::FastHasher;
pub(crate) use connection::reader::Closed;
pub(crate) use connection::streams::{Downstream, Next, Open, SendError, StreamPort, Upstream};
pub use connection::PeerInfo;
pub(crate) use connection::{Connection, Parts};
pub(crate) use fault::{panic_message, Fault};
pub(crate) use flow::Ending;
pub(crate) use meter::CallStats;
#[cfg(feature = "gateway")]
pub(crate) use meter::MethodFigures;
pub(crate) use responder::{Refused, Responder};
pub(crate) use throttle::LogLimit;
pub use trace::{current_trace, with_trace};

/// Where a link's reader sends the requests and casts it admits: the one interface between
/// this layer and the handlers. `dispatch` must not block (it runs on the reader) and must
/// answer through `request.responder`, now or later; a responder dropped unanswered answers
/// `shutdown` by itself.
pub(crate) trait Dispatch: Send + Sync + 'static {
    /// Routes one request or cast.
    fn dispatch(&self, request: Request<'_>);
}

/// One request or cast as the reader decoded it.
pub(crate) struct Request<'a> {
    /// The method named in the header.
    pub(crate) method: &'a str,
    /// How the body (and the reply) are encoded.
    pub(crate) encoding: Encoding,
    /// How long the caller waits, if it said (`None` for casts).
    pub(crate) timeout_ms: Option<u64>,
    /// A resend of a call that may have run (`Header::Retry`).
    pub(crate) retry: bool,
    /// The caller is a node (it told us an address to dial), not a plain client; with a
    /// cookie or TLS, it proved it belongs to the cluster.
    pub(crate) from_node: bool,
    /// The caller's fingerprint of the method's types, from a typed caller.
    pub(crate) signature: Option<u64>,
    /// The trace context the caller sent, if any.
    pub(crate) trace: Option<crate::wire::Trace>,
    /// The arguments, a zero-copy slice of the frame.
    pub(crate) body: Bytes,
    /// Answers the request exactly once; [`Responder::admit`] must pass before anything runs.
    pub(crate) responder: Responder,
    /// For a `StreamOpen`: the stream's items both ways. Its `Response` (the responder's
    /// answer) ends it.
    pub(crate) stream: Option<StreamPort>,
}

/// What every link of one node (or one client) shares; cheap to clone.
#[derive(Clone)]
pub(crate) struct LinkCtx {
    /// Where admitted requests go.
    pub(crate) dispatch: Arc<dyn Dispatch>,
    /// The bounds requests are admitted under.
    pub(crate) limits: Arc<Limits>,
    /// Every link task is spawned here, so shutdown can wait for them.
    pub(crate) tasks: TaskTracker,
}

/// The bounds on requests from peers, shared by every link of a node.
pub(crate) struct Limits {
    /// Set when the node starts shutting down: new requests (and new calls) are refused.
    pub(crate) closing: Arc<AtomicBool>,
    /// Requests one link may have running here at once.
    pub(crate) max_in_flight: usize,
    /// Requests all links together may have running here at once.
    pub(crate) max_in_flight_node: usize,
    /// Requests admitted on all links and not yet answered on the wire.
    pub(crate) node_inbound: AtomicUsize,
    /// Of those, the requests of plain clients (links without a listen address, the
    /// gateway's among them).
    pub(crate) client_inbound: AtomicUsize,
    /// Clients together get at most this many (¾ of `max_in_flight_node`): however many
    /// connections one opens, nodes' calls to each other keep room.
    pub(crate) max_in_flight_clients: usize,
    /// The longest a request may run here, whatever deadline its caller gave (or none);
    /// `None`: no bound.
    pub(crate) max_call: Option<std::time::Duration>,
    /// Bytes of large frames in progress across every link.
    pub(crate) frames: Arc<frames::FrameBudget>,
    /// Record per-call metrics (the node serves `/metrics`).
    pub(crate) metered: bool,
    /// Calls served here per method, for the dashboard (when metered).
    pub(crate) calls: Option<Arc<CallStats>>,
}

impl Limits {
    pub(crate) fn new(
        closing: Arc<AtomicBool>,
        config: &crate::config::NodeConfig,
        metered: bool,
    ) -> Self {
        Limits {
            closing,
            max_in_flight: config.max_in_flight,
            max_in_flight_node: config.max_in_flight_node,
            node_inbound: AtomicUsize::new(0),
            client_inbound: AtomicUsize::new(0),
            max_in_flight_clients: (config.max_in_flight_node / 4 * 3).max(1),
            max_call: (!config.max_call.is_zero()).then_some(config.max_call),
            frames: Arc::new(frames::FrameBudget::new(config.frame_budget)),
            metered,
            #[cfg(feature = "gateway")]
            calls: metered.then(|| Arc::new(CallStats::default())),
            #[cfg(not(feature = "gateway"))]
            calls: None,
        }
    }
}

/// The dispatcher of an endpoint that serves nothing (a plain client).
pub(crate) struct NoMethods;

impl Dispatch for NoMethods {
    fn dispatch(&self, request: Request<'_>) {
        let responder = request.responder;
        if let Err(refused) = responder.admit() {
            return responder.refuse(refused);
        }
        let message = format!("no method `{}`: a plain client serves none", request.method);
        responder.fail(ErrorKind::MethodNotFound, message);
    }
}
