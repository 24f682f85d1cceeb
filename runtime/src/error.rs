//! The errors a caller can see. [`RpcError`] is what `call` returns; [`ErrorKind`] is its
//! stable, wire-safe classification (the callee sends a kind and a message, the caller turns
//! them back into an `RpcError` that names the method).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::wire::RemoteError;

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

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// The callee has no such method.
    #[error("method `{method}` not found")]
    MethodNotFound {
        /// The name that was called.
        method: String,
    },
    /// The arguments did not fit the method's parameters. The detail names the method and
    /// what did not fit ("`add` takes 2 arguments (a: i64, b: i64), got 3").
    #[error("{detail}")]
    BadArguments {
        /// The method called.
        method: String,
        /// What did not fit, in the method's words.
        detail: String,
    },
    /// The handler returned an error.
    #[error("`{method}` failed: {message}")]
    Application {
        /// The method called.
        method: String,
        /// The handler's own message.
        message: String,
    },
    /// The handler panicked; the callee is still serving.
    #[error("`{method}` panicked: {message}")]
    Panicked {
        /// The method called.
        method: String,
        /// The panic payload, when it was a string.
        message: String,
    },
    /// No answer within the deadline.
    #[error("`{method}` timed out after {after:?}")]
    Timeout {
        /// The method called.
        method: String,
        /// The deadline that passed.
        after: Duration,
    },
    /// The callee refused the call to protect itself.
    #[error("`{method}` refused, callee overloaded: {message}")]
    Overloaded {
        /// The method called.
        method: String,
        /// Which bound was reached.
        message: String,
    },
    /// The peer could not be reached or is unknown.
    #[error("peer {peer} unavailable: {reason}")]
    PeerUnavailable {
        /// The address or name asked for.
        peer: String,
        /// Why it could not be reached.
        reason: String,
    },
    /// The peer was reached but refused the link: a name already in use by a live node, a
    /// node shutting down. Its kind is `peer_unavailable`.
    #[error("peer {peer} refused the connection: {reason}")]
    Refused {
        /// The peer's name.
        peer: String,
        /// Its reason, or ours when we refused it (the cookie check).
        reason: String,
    },
    /// The connection closed while the call was pending.
    #[error("connection to {peer} closed before `{method}` was answered")]
    Disconnected {
        /// The peer's name.
        peer: String,
        /// The method called.
        method: String,
    },
    /// The peer broke the protocol.
    #[error("{0}")]
    Protocol(String),
    /// A request or its result would exceed the frame limit; it was not sent.
    #[error("frame too large: {message}")]
    FrameTooLarge {
        /// Which frame, its size and the limit.
        message: String,
    },
    /// A node (this one or the callee) is shutting down.
    #[error("node is shutting down: {0}")]
    Shutdown(String),
    /// A link could not be authenticated: a cookie or certificate missing or wrong. The
    /// reason says which side refused the other, and why.
    #[error("{peer}: {reason}")]
    Unauthenticated {
        /// The address or name of the other side.
        peer: String,
        /// Which side refused which, and why.
        reason: String,
    },
    /// The caller may not call `method` (node-only, or outside the gateway's allowlist).
    #[error("`{method}` is forbidden: {message}")]
    Forbidden {
        /// The method called.
        method: String,
        /// Why it may not be called from here.
        message: String,
    },
    /// The virtual actor is not on the callee now; nothing ran, and a retry may reach it.
    #[error("`{method}` moved: {message}")]
    Moved {
        /// The method called.
        method: String,
        /// Where the callee thinks it lives, or why it cannot serve it now.
        message: String,
    },
    /// The method streams and was called as a plain request, or the reverse; nothing ran.
    #[error("`{method}` {message}")]
    Streaming {
        /// The method called.
        method: String,
        /// Which shape the callee serves it in.
        message: String,
    },
    /// A resent call was refused because the method is not idempotent; callers see the
    /// error of the attempt before it instead.
    #[error("retry of `{method}` refused: {message}")]
    RetryRefused {
        /// The method called.
        method: String,
        /// The callee's reason.
        message: String,
    },
}

impl RpcError {
    /// The stable kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RpcError::MethodNotFound { .. } => ErrorKind::MethodNotFound,
            RpcError::BadArguments { .. } => ErrorKind::BadArguments,
            RpcError::Application { .. } => ErrorKind::Application,
            RpcError::Panicked { .. } => ErrorKind::Panicked,
            RpcError::Timeout { .. } => ErrorKind::Timeout,
            RpcError::Overloaded { .. } => ErrorKind::Overloaded,
            RpcError::PeerUnavailable { .. } | RpcError::Refused { .. } => {
                ErrorKind::PeerUnavailable
            }
            RpcError::Disconnected { .. } => ErrorKind::Disconnected,
            RpcError::Protocol(_) => ErrorKind::Protocol,
            RpcError::FrameTooLarge { .. } => ErrorKind::FrameTooLarge,
            RpcError::Shutdown(_) => ErrorKind::Shutdown,
            RpcError::RetryRefused { .. } => ErrorKind::RetryRefused,
            RpcError::Unauthenticated { .. } => ErrorKind::Unauthenticated,
            RpcError::Forbidden { .. } => ErrorKind::Forbidden,
            RpcError::Moved { .. } => ErrorKind::Moved,
            RpcError::Streaming { .. } => ErrorKind::Streaming,
        }
    }

    /// Rebuilds the caller-side error from what the callee sent for `method`.
    pub(crate) fn from_remote(method: &str, err: RemoteError, timeout: Duration) -> Self {
        let method = method.to_owned();
        let message = err.message;
        match err.kind {
            ErrorKind::MethodNotFound => RpcError::MethodNotFound { method },
            ErrorKind::BadArguments => RpcError::BadArguments {
                method,
                detail: message,
            },
            ErrorKind::Application => RpcError::Application { method, message },
            ErrorKind::Panicked => RpcError::Panicked { method, message },
            ErrorKind::Timeout => RpcError::Timeout {
                method,
                after: timeout,
            },
            ErrorKind::Overloaded => RpcError::Overloaded { method, message },
            // The callee could not reach a peer of its own while serving `method`.
            ErrorKind::PeerUnavailable => RpcError::PeerUnavailable {
                peer: format!("(a peer of the callee of `{method}`)"),
                reason: message,
            },
            ErrorKind::Disconnected => RpcError::Disconnected {
                peer: message,
                method,
            },
            ErrorKind::Protocol => RpcError::Protocol(message),
            ErrorKind::FrameTooLarge => RpcError::FrameTooLarge { message },
            ErrorKind::Shutdown => RpcError::Shutdown(message),
            ErrorKind::RetryRefused => RpcError::RetryRefused { method, message },
            // The callee could not authenticate a peer of its own while serving `method`.
            ErrorKind::Unauthenticated => RpcError::Unauthenticated {
                peer: format!("(a peer of the callee of `{method}`)"),
                reason: message,
            },
            ErrorKind::Forbidden => RpcError::Forbidden { method, message },
            ErrorKind::Moved => RpcError::Moved { method, message },
            ErrorKind::Streaming => RpcError::Streaming { method, message },
        }
    }

    /// The error as a node relays it to its own caller (a forwarded call that failed
    /// further on): [`RpcError::from_remote`] on the caller's side rebuilds the same error,
    /// instead of wrapping the sentence in another one.
    pub(crate) fn to_remote(&self) -> RemoteError {
        let message = match self {
            RpcError::BadArguments { detail, .. } => detail.clone(),
            RpcError::Application { message, .. }
            | RpcError::Panicked { message, .. }
            | RpcError::Overloaded { message, .. }
            | RpcError::FrameTooLarge { message }
            | RpcError::Forbidden { message, .. }
            | RpcError::Moved { message, .. }
            | RpcError::Streaming { message, .. }
            | RpcError::RetryRefused { message, .. } => message.clone(),
            RpcError::PeerUnavailable { peer, reason }
            | RpcError::Unauthenticated { peer, reason } => format!("{peer}: {reason}"),
            RpcError::Disconnected { peer, .. } => peer.clone(),
            RpcError::Protocol(message) | RpcError::Shutdown(message) => message.clone(),
            other => other.to_string(),
        };
        RemoteError::new(self.kind(), message)
    }

    /// The message part without the kind, as the CLI prints it after `<kind>: `.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The listen address could not be resolved or bound (the cause is the source).
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Multicast discovery could not be set up (no multicast route, for one).
    #[error("cannot start multicast discovery on {group}")]
    Discovery {
        /// The group asked for.
        group: std::net::SocketAddrV4,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TLS files could not be loaded (the message names the file).
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
}
