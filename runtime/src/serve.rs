//! The callee's side of a request: admission, lookup, and the [`Responder`] that guarantees
//! every admitted request is answered exactly once.
//!
//! The connection reader calls [`dispatch`] for each request or cast; it never blocks the
//! reader. Handlers (see [`crate::methods`]) get an [`Incoming`] and answer through its
//! responder, which writes a ready-made response frame to the connection's writer queue.
//! A responder dropped without answering (a handler task stopped at shutdown, an actor gone)
//! answers `Shutdown` itself, so no caller waits for a reply that will never come.

use std::any::Any;

use futures_util::future::AbortHandle;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::connection::Shared;
use crate::methods::Methods;
use crate::wire::{codec, CodecError, Encoding, FrameBuf, Header, RemoteError};
use crate::ErrorKind;

/// What the reader needs to serve requests; one per node (or client), cloned per connection.
#[derive(Clone)]
pub(crate) struct ServeCtx {
    pub(crate) methods: Methods,
    /// Every handler task is spawned here, so shutdown can wait for them.
    pub(crate) tasks: TaskTracker,
    /// Cancelled when running handlers must stop (after the shutdown grace).
    pub(crate) stop: CancellationToken,
    /// Set when the node starts shutting down: new requests are refused.
    pub(crate) closing: Arc<AtomicBool>,
    pub(crate) max_in_flight: usize,
    /// Requests from every link running here at once (see `node_inbound`).
    pub(crate) max_in_flight_node: usize,
    /// Requests admitted on all of this node's links and not yet answered on the wire.
    pub(crate) node_inbound: Arc<AtomicUsize>,
    /// Record per-call metrics (the node has a gateway serving `/metrics`).
    pub(crate) metered: bool,
    /// How to read each actor's mailbox depth, for `/metrics`.
    pub(crate) mailboxes: Mailboxes,
}

/// Actor name → a function reading its mailbox depth.
pub(crate) type Mailboxes =
    Arc<std::sync::Mutex<Vec<(String, Box<dyn Fn() -> usize + Send + Sync>)>>>;

/// One admitted request or cast, handed to its handler.
pub(crate) struct Incoming {
    pub(crate) encoding: Encoding,
    pub(crate) body: Bytes,
    /// When the caller stops waiting, if it said.
    pub(crate) deadline: Option<Instant>,
    pub(crate) responder: Responder,
}

/// What the header said about one request or cast.
pub(crate) struct Call<'a> {
    /// `None` for a cast.
    pub(crate) id: Option<u64>,
    pub(crate) method: &'a str,
    pub(crate) encoding: Encoding,
    pub(crate) timeout_ms: Option<u64>,
    /// A `Retry`: run only if the method is idempotent.
    pub(crate) retry: bool,
}

/// Routes one request or cast to its handler, or answers it with an error at once.
pub(crate) fn dispatch(link: &Arc<Shared>, ctx: &ServeCtx, call: Call<'_>, body: Bytes) {
    let Call {
        id,
        method,
        encoding,
        timeout_ms,
        retry,
    } = call;
    let mut responder = Responder::new(link.clone(), id, encoding);
    let (handler, idempotent) = match ctx.methods.lookup(method) {
        Some((handler, idempotent)) => (Some(handler), idempotent),
        None => (None, false),
    };
    if ctx.metered {
        // Only registered names become labels: a caller cannot grow the label set.
        let label = match handler {
            Some(_) => metrics::SharedString::from(Arc::<str>::from(method)),
            None => metrics::SharedString::const_str("<unknown>"),
        };
        responder.meter = Some((label, Instant::now()));
    }
    if ctx.closing.load(Ordering::Relaxed) {
        return responder.fail(ErrorKind::Shutdown, "the callee is shutting down");
    }
    // `responder` already counts this request, hence `>`.
    if link.node_inbound.load(Ordering::Relaxed) > ctx.max_in_flight_node {
        let message = format!(
            "more than {} requests in flight on this node",
            ctx.max_in_flight_node
        );
        return responder.fail(ErrorKind::Overloaded, message);
    }
    if link.inbound.load(Ordering::Relaxed) > ctx.max_in_flight {
        let message = format!(
            "more than {} requests in flight on this connection",
            ctx.max_in_flight
        );
        return responder.fail(ErrorKind::Overloaded, message);
    }
    let Some(handler) = handler else {
        return responder.fail(
            ErrorKind::MethodNotFound,
            format!("no method `{method}` is registered"),
        );
    };
    if retry && !idempotent {
        let message = format!("`{method}` is not registered as idempotent, so a call that may have run is not run again");
        return responder.fail(ErrorKind::RetryRefused, message);
    }
    let deadline = match timeout_ms {
        Some(ms) if handler.needs_deadline() => Some(Instant::now() + Duration::from_millis(ms)),
        _ => None,
    };
    handler.invoke(
        Incoming {
            encoding,
            body,
            deadline,
            responder,
        },
        ctx,
    );
}

/// Answers one request exactly once; see the module doc for what happens on drop.
pub(crate) struct Responder {
    link: Arc<Shared>,
    /// `None` for a cast: nothing is sent back.
    id: Option<u64>,
    encoding: Encoding,
    answered: bool,
    /// The method's label and when the request arrived, when metrics are recorded.
    meter: Option<(metrics::SharedString, Instant)>,
}

impl Responder {
    fn new(link: Arc<Shared>, id: Option<u64>, encoding: Encoding) -> Self {
        // Both counters are released in `finish`, or for `inbound` by the writer once the reply
        // is written.
        link.inbound.fetch_add(1, Ordering::Relaxed);
        link.node_inbound.fetch_add(1, Ordering::Relaxed);
        link.in_flight.fetch_add(1, Ordering::Relaxed);
        Responder {
            link,
            id,
            encoding,
            answered: false,
            meter: None,
        }
    }

    /// Sends the handler's result, encoded straight into the link's outbox.
    pub(crate) fn reply<R: Serialize + ?Sized>(mut self, result: Result<&R, RemoteError>) {
        // Encoding runs user code (Serialize) that may panic: the responder is marked answered
        // only afterwards, so a panic here still answers from `drop`.
        let mut outcome = "ok";
        let queued = match self.id {
            None => {
                if let Err(error) = &result {
                    outcome = error.kind.as_str();
                    debug!(peer = %self.link.peer.name, %error, "cast failed");
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

    /// Registers the task answering this request, so the caller's `Cancel` can abort it;
    /// the registration ends when the returned guard drops. Casts cannot be cancelled.
    pub(crate) fn track(&self, abort: AbortHandle) -> Option<Tracked> {
        let id = self.id?;
        self.link.running.insert(id, abort);
        Some(Tracked {
            link: self.link.clone(),
            id,
        })
    }

    /// The caller cancelled: release the request without answering it.
    pub(crate) fn abandon(mut self) {
        self.finish(false, "cancelled");
    }

    /// Answers with what a handler produced: its value, `application` for its own error,
    /// `panicked` for a panic.
    pub(crate) fn answer<R: Serialize, E: std::fmt::Display>(
        self,
        ran: Result<Result<R, E>, Box<dyn Any + Send>>,
    ) {
        match ran {
            Ok(Ok(value)) => self.reply(Ok(&value)),
            Ok(Err(e)) => self.fail(ErrorKind::Application, e.to_string()),
            Err(payload) => self.fail(ErrorKind::Panicked, panic_message(&*payload)),
        }
    }

    /// Sends an error.
    pub(crate) fn fail(self, kind: ErrorKind, message: impl Into<String>) {
        self.reply::<()>(Err(RemoteError::new(kind, message)));
    }

    /// Queues the success response; false if the writer has stopped.
    fn push_ok<R: Serialize + ?Sized>(&self, id: u64, value: &R) -> Result<bool, RemoteError> {
        let header = Header::Response {
            id,
            outcome: Ok(self.encoding),
        };
        let (encoding, max) = (self.encoding, self.link.max_frame);
        let cannot_encode = |e: CodecError| {
            RemoteError::new(
                ErrorKind::Protocol,
                format!("cannot encode the result: {e}"),
            )
        };
        self.link.outbox.push(true, |buf| {
            match append_frame(buf, &header, encoding, value, max) {
                Ok(()) => Ok(()),
                Err(FrameError::Encode(e)) => Err(cannot_encode(e)),
                Err(FrameError::TooLarge(size)) => Err(RemoteError::new(
                    ErrorKind::FrameTooLarge,
                    format!("the result takes {size} bytes, over the {max}-byte frame limit"),
                )),
            }
        })
    }

    /// Queues an error response, cut to fit the caller's frame limit; false if not queued.
    fn push_error(&self, id: u64, mut error: RemoteError) -> bool {
        let max = self.link.max_frame;
        let room = max.saturating_sub(ERROR_OVERHEAD).min(MAX_ERROR_MESSAGE);
        truncate_on_char_boundary(&mut error.message, room);
        let header = Header::Response {
            id,
            outcome: Err(error),
        };
        let pushed = self.link.outbox.push(true, |buf| {
            FrameBuf::new(buf, &header)
                .map_err(drop)?
                .finish(max)
                .map_err(drop)
        });
        pushed.unwrap_or(false)
    }

    /// Releases the counters: `inbound` now unless the writer will, once the reply is out.
    fn finish(&mut self, queued: bool, outcome: &'static str) {
        if let Some((method, arrived)) = self.meter.take() {
            record_call(Side::Served, method, outcome, arrived);
        }
        self.answered = true;
        self.link.in_flight.fetch_sub(1, Ordering::Relaxed);
        if !queued {
            self.link.release_inbound(1);
        }
    }
}

/// See [`Responder::track`].
pub(crate) struct Tracked {
    link: Arc<Shared>,
    id: u64,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.link.running.remove(self.id);
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

/// Which end of a call a metric is about.
#[derive(Clone, Copy)]
pub(crate) enum Side {
    Served,
    Made,
}

/// Counts one finished call (served or made) and records its latency.
pub(crate) fn record_call(
    side: Side,
    method: metrics::SharedString,
    outcome: &'static str,
    started: Instant,
) {
    let (total, side) = match side {
        Side::Served => ("meshrpc_calls_served_total", "served"),
        Side::Made => ("meshrpc_calls_made_total", "made"),
    };
    metrics::counter!(total, "method" => method.clone(), "outcome" => outcome).increment(1);
    metrics::histogram!("meshrpc_call_seconds", "side" => side, "method" => method)
        .record(started.elapsed().as_secs_f64());
}

/// Why [`append_frame`] added nothing.
pub(crate) enum FrameError {
    /// The header or the body did not encode.
    Encode(CodecError),
    /// The frame would take this many bytes, over the limit.
    TooLarge(usize),
}

/// Appends one whole frame, `header` then `value` in `encoding`, to `buf`; on failure `buf`
/// is left as it was. The shape of every request and every successful response.
pub(crate) fn append_frame<T: Serialize + ?Sized>(
    buf: &mut BytesMut,
    header: &Header<'_>,
    encoding: Encoding,
    value: &T,
    max_frame: usize,
) -> Result<(), FrameError> {
    let mut frame = FrameBuf::new(buf, header).map_err(FrameError::Encode)?;
    encode_body(encoding, value, frame.body_mut()).map_err(FrameError::Encode)?;
    frame.finish(max_frame).map_err(FrameError::TooLarge)
}

/// Appends `value` to a frame body in `encoding`.
pub(crate) fn encode_body<T: Serialize + ?Sized>(
    encoding: Encoding,
    value: &T,
    buf: &mut BytesMut,
) -> Result<(), CodecError> {
    match encoding {
        Encoding::Bincode => codec::encode_into(value, buf),
        Encoding::Json => codec::encode_json_into(value, buf),
    }
}

/// Decodes a request's arguments; failures become `BadArguments` naming what did not fit.
pub(crate) fn decode_args<A: DeserializeOwned>(
    encoding: Encoding,
    body: &[u8],
) -> Result<A, RemoteError> {
    let decoded = match encoding {
        Encoding::Bincode => codec::decode_exact(body),
        Encoding::Json => codec::decode_json_args(body),
    };
    decoded.map_err(|e| {
        RemoteError::new(
            ErrorKind::BadArguments,
            format!("expected {}: {e}", std::any::type_name::<A>()),
        )
    })
}

/// Decodes a reply's result (the caller's side).
pub(crate) fn decode_result<R: DeserializeOwned>(
    encoding: Encoding,
    body: &[u8],
) -> Result<R, CodecError> {
    match encoding {
        Encoding::Bincode => codec::decode_exact(body),
        Encoding::Json => codec::decode_json(body),
    }
}

/// The text of a panic payload, for the `Panicked` error.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
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
