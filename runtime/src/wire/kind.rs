//! [`ErrorKind`]: the stable kind of a failed call, as it crosses the wire (in a
//! [`super::RemoteError`]) and as logs, the CLI and other languages match on it. Pure data.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The stable kind of a failed call: what logs, the CLI and other languages match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorKind {
    /// No method of that name is registered on the callee.
    MethodNotFound,
    /// The arguments did not decode as the method's argument type.
    BadArguments,
    /// The handler ran and returned its own error.
    Application,
    /// The handler panicked; the callee kept running.
    Panicked,
    /// No answer within the call's deadline.
    Timeout,
    /// The callee refused the call because a bound was reached (mailbox, in-flight limit).
    Overloaded,
    /// The peer could not be reached.
    PeerUnavailable,
    /// The connection closed before the answer arrived.
    Disconnected,
    /// The peer broke the protocol or sent something undecodable.
    Protocol,
    /// A frame exceeded the maximum frame size.
    FrameTooLarge,
    /// The node (caller's or callee's) is shutting down.
    Shutdown,
    /// A resent call was refused: the method is not registered as idempotent.
    RetryRefused,
    /// One side could not prove who it is: a cookie, a gateway token or a certificate was
    /// missing or wrong.
    Unauthenticated,
    /// The caller may not call this method: a node-only method called by a client or
    /// through the gateway, or a method outside the gateway's allowlist.
    Forbidden,
    /// The virtual actor called does not live on the callee (any more, or not yet): the
    /// cluster's view is changing. Safe to retry: nothing ran. `ActorRef` retries it.
    Moved,
    /// A streaming method called as a plain request, or a plain method opened as a stream:
    /// nothing ran. `meshrpc call` opens the stream when told this.
    Streaming,
}

impl ErrorKind {
    /// The snake_case name printed by the CLI (`error: <kind>: <message>`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::MethodNotFound => "method_not_found",
            ErrorKind::BadArguments => "bad_arguments",
            ErrorKind::Application => "application",
            ErrorKind::Panicked => "panicked",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::PeerUnavailable => "peer_unavailable",
            ErrorKind::Disconnected => "disconnected",
            ErrorKind::Protocol => "protocol",
            ErrorKind::FrameTooLarge => "frame_too_large",
            ErrorKind::Shutdown => "shutdown",
            ErrorKind::RetryRefused => "retry_refused",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::Moved => "moved",
            ErrorKind::Streaming => "streaming",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
