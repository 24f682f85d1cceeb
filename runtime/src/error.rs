//! The errors a caller can see. [`RpcError`] is what `call` returns; [`ErrorKind`] (it
//! crosses the wire, so it lives in `wire/kind.rs`) is its stable classification: the callee
//! sends a kind and a message, the caller turns them back into an `RpcError` that names the
//! method.

use std::time::Duration;

use crate::wire::ErrorKind;
use crate::wire::RemoteError;

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
        /// The handler's error value as JSON, when it returned one (`Err(e)` from a
        /// registered closure): decode it with [`RpcError::data`].
        data: Option<bytes::Bytes>,
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

/// A handler may return an `RpcError` as its own error (`Err(e)` from a call it made): it
/// reaches the caller as an `application` error whose message is this error's text.
impl serde::Serialize for RpcError {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
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
        let (message, data) = (err.message, err.data);
        match err.kind {
            ErrorKind::MethodNotFound => RpcError::MethodNotFound { method },
            ErrorKind::BadArguments => RpcError::BadArguments {
                method,
                detail: message,
            },
            ErrorKind::Application => RpcError::Application {
                method,
                message,
                data,
            },
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
        let mut remote = RemoteError::new(self.kind(), message);
        if let RpcError::Application { data, .. } = self {
            remote.data.clone_from(data);
        }
        remote
    }

    /// The handler's own error value, for an `application` error whose handler returned
    /// `Err(e)` with `e: Serialize` (sent as JSON beside the message): `None` for any other
    /// error, or when the value is not an `E`.
    ///
    /// ```no_run
    /// # async fn demo(node: meshrpc::Node) {
    /// #[derive(serde::Deserialize)]
    /// enum Refusal { TooSmall { min: i64 } }
    /// if let Err(e) = node.call::<i64>("b", "at_least", 3).await {
    ///     if let Some(Refusal::TooSmall { min }) = e.data::<Refusal>() {
    ///         println!("at least {min}");
    ///     }
    /// }
    /// # }
    /// ```
    pub fn data<E: serde::de::DeserializeOwned>(&self) -> Option<E> {
        match self {
            RpcError::Application {
                data: Some(data), ..
            } => serde_json::from_slice(data).ok(),
            _ => None,
        }
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
    /// The state store (`NodeConfig::state`) could not be opened.
    #[error("state store: {0}")]
    State(String),
}
