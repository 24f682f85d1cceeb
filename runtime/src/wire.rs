//! Everything that crosses the wire, and how it becomes bytes (no IO here).
//!
//! A frame is a 4-byte big-endian length and that many bytes. The handshake is three frames,
//! each `MAGIC`, version, then a `Greeting`, `Hello` or `Welcome`; every later frame is a
//! bincode `Header` followed directly by its body, encoded as the header says. The body is
//! never wrapped in a second length: the frame's length already bounds it. docs/PROTOCOL.md is
//! the byte-level description of this module.

pub(crate) mod codec;
mod frame;
mod kind;
pub mod swim;
mod trace;

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use codec::{
    decode_exact as decode_value, encode_into as encode_value, CodecError, DECODE_LIMIT,
};
pub(crate) use frame::{
    append_frame, append_frame_raw, append_header, frame_bytes, FrameError, Speaks,
};
pub use frame::{decode_frame, FrameBuf};
pub use frame::{
    decode_handshake, decode_handshake_versioned, encode_handshake, encode_handshake_at,
    HandshakeError,
};
pub use kind::ErrorKind;
pub use trace::Trace;

/// The four bytes every handshake frame starts with.
pub const MAGIC: [u8; 4] = *b"MRPC";
/// The newest protocol version this build speaks. Each release also speaks the one
/// before ([`PREVIOUS_VERSION`]); two peers use the newest they share (docs/PROTOCOL.md,
/// "Versions").
pub const PROTOCOL_VERSION: u16 = 4;

/// The protocol version of the release before this one, still spoken: a cluster can be
/// upgraded one node at a time.
pub const PREVIOUS_VERSION: u16 = 3;

/// The first bytes of an acceptor's greeting nonce that say which newest version it
/// speaks (`NONCE_MARK`, then that version, u16 BE; the other 10 bytes are random). A
/// greeting goes out in the previous version's format, so dialers of the release before
/// read it; those of this release read the mark and answer in the newest version both
/// speak. A random nonce of an older release starts so once in 2^32 handshakes: that one
/// fails, and the dial after it works.
pub const NONCE_MARK: [u8; 4] = *b"MRPv";

/// `nonce` marked as the greeting of an acceptor whose newest version is `highest`.
pub fn mark_nonce(nonce: &mut Nonce, highest: u16) {
    nonce[..4].copy_from_slice(&NONCE_MARK);
    nonce[4..6].copy_from_slice(&highest.to_be_bytes());
}

/// The newest version an acceptor's greeting nonce says it speaks, if it is marked.
pub fn marked_version(nonce: &Nonce) -> Option<u16> {
    (nonce[..4] == NONCE_MARK).then(|| u16::from_be_bytes([nonce[4], nonce[5]]))
}

/// A node's identity for one run: random, new at every start.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub u64);

impl NodeId {
    pub(crate) fn random() -> Self {
        NodeId(rand::random())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

/// Who a node (or client) is: sent by both sides during the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The sender's id for this run.
    pub id: NodeId,
    /// The sender's name (`meshrpc call` uses a name of its own: clients are not nodes).
    pub name: String,
    /// The address the sender can be dialed at; `None` for a plain client that only calls.
    pub listen: Option<String>,
    /// The largest frame the sender accepts; the other side never sends more.
    pub max_frame: u32,
    /// When this run started (milliseconds since the Unix epoch): a restarted node has a
    /// larger incarnation, so news about an older run never overrides news about a newer one.
    pub incarnation: u64,
}

/// Random bytes that make each handshake's proofs unique (no replay).
pub type Nonce = [u8; 16];

/// A cookie proof: HMAC-SHA256 over both nonces and both ids (see docs/PROTOCOL.md).
pub type Proof = [u8; 32];

/// The first frame on a connection, sent by the acceptor as soon as it accepts: the dialer
/// learns whom it reached before it says anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Greeting {
    /// The acceptor.
    pub identity: Identity,
    /// The acceptor's nonce.
    pub nonce: Nonce,
}

/// The dialer's answer to a [`Greeting`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The dialer.
    pub identity: Identity,
    /// The dialer's nonce.
    pub nonce: Nonce,
    /// Proof that the dialer knows the cluster cookie (or, for a plain client, the client
    /// secret); `None` when it has neither.
    pub proof: Option<Proof>,
}

/// The acceptor's decision, the last handshake frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// Whether the connection is kept.
    pub verdict: Verdict,
    /// Proof that the acceptor knows the cluster cookie; `None` when it has none.
    pub proof: Option<Proof>,
}

/// The acceptor's decision on a new connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// The connection is registered and may carry calls both ways.
    Accept,
    /// The acceptor already has, or is completing, a link to the dialer that wins the
    /// tie-break: the dialer should use that one.
    Duplicate,
    /// The connection is refused for the reason given.
    Refuse(String),
    /// The dialer did not prove it knows the cluster cookie; the reason is written for the
    /// dialer to read.
    Unauthenticated(String),
}

/// How a body is encoded; a reply is encoded like its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Encoding {
    /// bincode 2, standard configuration: typed Rust callers.
    Bincode,
    /// JSON; arguments are a positional array: the CLI, other languages, gateways.
    Json,
}

/// The header of every frame after the handshake; the body (if any) follows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Header<'a> {
    /// A call expecting a [`Header::Response`] with the same id; the arguments follow.
    Request {
        /// Chosen by the caller, unique among its calls in flight on this connection.
        id: u64,
        /// The registered method name.
        #[serde(borrow)]
        method: Cow<'a, str>,
        /// Time the caller will wait, in milliseconds, counted from when the frame was sent.
        timeout_ms: Option<u64>,
        /// How the arguments (and the reply) are encoded.
        encoding: Encoding,
        /// The caller's fingerprint of the method's parameter and result types (typed
        /// callers): a callee whose own differs answers `bad_arguments` naming its signature.
        signature: Option<u64>,
        /// The W3C trace context the call belongs to, if any.
        trace: Option<Trace>,
    },
    /// A one-way message: no reply, errors are only logged by the receiver. Arguments follow.
    Cast {
        /// The registered method name.
        #[serde(borrow)]
        method: Cow<'a, str>,
        /// How the arguments are encoded.
        encoding: Encoding,
    },
    /// The answer to a request; on `Ok` the result follows in the given encoding.
    Response {
        /// The id of the request being answered.
        id: u64,
        /// Success with the result's encoding, or the error.
        outcome: Result<Encoding, RemoteError>,
    },
    /// The caller no longer waits for this request.
    Cancel {
        /// The id of the abandoned request.
        id: u64,
    },
    /// The sender closes the connection after this frame.
    Goodbye {
        /// Why, for the other side's log.
        #[serde(borrow)]
        reason: Cow<'a, str>,
        /// True when the sender is leaving the cluster (shutting down), not just this link.
        leaving: bool,
    },
    /// Sent on an idle link; the other side answers `Pong`. Either way the link carries
    /// bytes every heartbeat of *each* side, whatever the other side's settings.
    Ping,
    /// The answer to a `Ping`.
    Pong,
    /// A request sent again after an attempt that may have run (timeout, lost link): the
    /// callee runs it only if the method is registered as idempotent, and answers
    /// `retry_refused` otherwise. Same fields and body as `Request`; the caller opted in.
    Retry {
        /// As in `Request`.
        id: u64,
        /// As in `Request`.
        #[serde(borrow)]
        method: Cow<'a, str>,
        /// As in `Request`.
        timeout_ms: Option<u64>,
        /// As in `Request`.
        encoding: Encoding,
        /// As in `Request`.
        signature: Option<u64>,
        /// As in `Request`.
        trace: Option<Trace>,
    },
    /// Opens a stream: a request whose callee may send [`Header::StreamItem`]s before its
    /// one [`Header::Response`], which ends the stream. Fields and body as in `Request`.
    StreamOpen {
        /// As in `Request`; the stream's frames name it, and its `Response` answers it.
        id: u64,
        /// As in `Request`.
        #[serde(borrow)]
        method: Cow<'a, str>,
        /// Time the caller gives the whole stream; `None`: no deadline.
        timeout_ms: Option<u64>,
        /// As in `Request`; every item is encoded so too.
        encoding: Encoding,
        /// As in `Request`.
        signature: Option<u64>,
        /// How many items the callee may send before the caller grants more.
        credit: u32,
        /// As in `Request`.
        trace: Option<Trace>,
    },
    /// One item of a stream; it follows as the body.
    StreamItem {
        /// The stream (the caller's request id).
        id: u64,
        /// True from the caller (an item of its upload), false from the callee.
        from_caller: bool,
    },
    /// The sender may receive `n` more items of the stream than it had allowed so far.
    StreamCredit {
        /// The stream (the caller's request id).
        id: u64,
        /// True from the caller (more items of the callee's), false from the callee.
        from_caller: bool,
        /// How many more.
        n: u32,
    },
    /// The caller sends no more items on the stream (its upload is complete).
    StreamEnd {
        /// The stream (the caller's request id).
        id: u64,
    },
    /// `Goodbye` with a promise (version 4 on): the sender closes the connection after
    /// this frame, and it dispatched none of the receiver's requests (or streams) with an
    /// id above `last`, nor will it. The receiver fails those as not run — they may go
    /// elsewhere — and the others, still unanswered, as `disconnected` (they may have run).
    GoodbyeAfter {
        /// As in `Goodbye`.
        #[serde(borrow)]
        reason: Cow<'a, str>,
        /// As in `Goodbye`.
        leaving: bool,
        /// The highest id of the receiver's requests the sender dispatched (0: none).
        last: u64,
    },
}

/// The error part of a response: the only error type that crosses the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteError {
    /// What kind of failure; stable across versions.
    pub kind: ErrorKind,
    /// Human-readable detail from the callee.
    pub message: String,
    /// For an `application` error: the handler's error value as JSON, sent as the frame's
    /// body after the header (not in it: a node of an earlier version reads the header and
    /// ignores the body of an error).
    #[serde(skip)]
    pub data: Option<Bytes>,
}

impl RemoteError {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        RemoteError {
            kind,
            message: message.into(),
            data: None,
        }
    }
}

/// A response's outcome with its body: the result's bytes, or the error with its data (an
/// error's body, when it has one, is its data).
pub(crate) fn reply_of(
    outcome: Result<Encoding, RemoteError>,
    body: Bytes,
) -> Result<(Encoding, Bytes), RemoteError> {
    match outcome {
        Ok(encoding) => Ok((encoding, body)),
        Err(mut error) => {
            if !body.is_empty() && error.kind == ErrorKind::Application {
                error.data = Some(body);
            }
            Err(error)
        }
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}
