//! The caller's side: [`Peer`] (a handle to one link, with typed and dynamic calls),
//! [`CallOptions`] and the retry policy, and [`Client`], a connection for programs that only
//! call and are not nodes (the CLI is one). A client's link serves no methods.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod stream;

pub use stream::{ItemSink, ItemStream, StreamOptions, StreamReply};

use crate::config::NodeConfig;
use crate::error::RpcError;
use crate::handlers::MethodInfo;
use crate::link::tls::Tls;
use crate::link::transport::{self, Local};
use crate::link::{Connection, Limits, LinkCtx, NoMethods, Parts, PeerInfo};
use crate::wire::codec::decode_result;
use crate::wire::ErrorKind;
use crate::wire::{Encoding, Identity, NodeId};

/// Per-call settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallOptions {
    /// How long to wait for each attempt's reply; default: the node's (or client's) default.
    pub timeout: Option<Duration>,
    /// How many times to resend the call after a failure that allows it (default 0: calls are
    /// sent at most once). See [`CallOptions::retries`].
    pub retries: u32,
}

impl CallOptions {
    /// Options with this timeout.
    pub fn timeout(timeout: Duration) -> Self {
        CallOptions {
            timeout: Some(timeout),
            retries: 0,
        }
    }

    /// Resends the call up to `n` more times, with jittered exponential backoff, when it
    /// failed in a way that allows it: `overloaded` or `peer_unavailable` (it did not run),
    /// or `timeout` or `disconnected` (it may have run). A call that may have run is resent
    /// as a retry, which the callee runs only if the method is registered as idempotent
    /// ([`crate::handlers::Registered::idempotent`]); otherwise the error of the attempt before is
    /// returned. Calls through a [`crate::node::Node`] find or redial the peer for each attempt;
    /// a [`Peer`]'s own link cannot come back, so there a lost link ends the retries.
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }
}

/// Runs `attempt` once, then again while `options` and the error allow (see
/// [`CallOptions::retries`]); `attempt(true)` marks a resend of a call that may have run.
pub(crate) async fn retrying<T, F, Fut>(options: CallOptions, mut attempt: F) -> Result<T, RpcError>
where
    F: FnMut(bool) -> Fut,
    Fut: std::future::Future<Output = Result<T, RpcError>>,
{
    let mut result = attempt(false).await;
    let mut may_have_run = false;
    for n in 0..options.retries {
        let Err(error) = &result else { break };
        match error.kind() {
            ErrorKind::Timeout | ErrorKind::Disconnected => may_have_run = true,
            ErrorKind::Overloaded | ErrorKind::PeerUnavailable => {}
            _ => break,
        }
        let backoff = Duration::from_millis(20 << n.min(5));
        tokio::time::sleep(backoff + backoff.mul_f64(rand::random::<f64>() * 0.5)).await;
        match attempt(may_have_run).await {
            // Not idempotent: what the caller needs to know is what happened before.
            Err(RpcError::RetryRefused { .. }) => break,
            next => result = next,
        }
    }
    result
}

/// What a request says besides its arguments.
#[derive(Clone, Copy)]
pub(crate) struct Call<'a> {
    pub(crate) method: &'a str,
    pub(crate) encoding: Encoding,
    /// The caller's fingerprint of the method's types (typed service clients).
    pub(crate) signature: Option<u64>,
}

impl<'a> Call<'a> {
    /// An untyped bincode call.
    pub(crate) fn bincode(method: &'a str) -> Self {
        Call {
            method,
            encoding: Encoding::Bincode,
            signature: None,
        }
    }
}

/// A handle to one peer's link; cheap to clone. Calls fail with `Disconnected` once the link
/// closes: ask the node for the peer again to reconnect.
#[derive(Clone)]
pub struct Peer {
    pub(crate) conn: Connection,
    pub(crate) default_timeout: Duration,
    /// Set when the local node shuts down: new calls fail with `Shutdown`.
    pub(crate) closing: Arc<AtomicBool>,
}

impl Peer {
    /// Who this peer is.
    pub fn info(&self) -> &PeerInfo {
        self.conn.peer()
    }

    /// False once the link has closed.
    pub fn is_connected(&self) -> bool {
        !self.conn.is_closed()
    }

    /// Calls `method` with `args` (bincode) and decodes the result as `R`.
    ///
    /// # Errors
    /// Any [`RpcError`]: the callee's (method not found, bad arguments, application error,
    /// panic, overload) or the link's (timeout, disconnected, frame too large).
    ///
    /// # Cancel safety
    /// Dropping the future abandons the call; its late reply is discarded.
    pub async fn call<R: DeserializeOwned>(
        &self,
        method: &str,
        args: impl Serialize,
    ) -> Result<R, RpcError> {
        self.call_with(method, args, CallOptions::default()).await
    }

    /// [`Peer::call`] with options.
    pub async fn call_with<R: DeserializeOwned>(
        &self,
        method: &str,
        args: impl Serialize,
        options: CallOptions,
    ) -> Result<R, RpcError> {
        let (encoding, body) = self.send(Call::bincode(method), &args, options).await?;
        decode_typed(method, encoding, &body)
    }

    /// One attempt of a call on this link.
    pub(crate) async fn attempt<A: Serialize + ?Sized>(
        &self,
        call: Call<'_>,
        args: &A,
        options: CallOptions,
        retry: bool,
    ) -> Result<(Encoding, bytes::Bytes), RpcError> {
        self.check_open()?;
        let timeout = options.timeout.unwrap_or(self.default_timeout);
        self.conn
            .request(
                call.method,
                call.encoding,
                args,
                timeout,
                retry,
                call.signature,
            )
            .await
    }

    /// A call on this link, with the retries `options` asks for.
    pub(crate) async fn send<A: Serialize + ?Sized>(
        &self,
        call: Call<'_>,
        args: &A,
        options: CallOptions,
    ) -> Result<(Encoding, bytes::Bytes), RpcError> {
        retrying(options, |retry| self.attempt(call, args, options, retry)).await
    }

    /// Calls a method declared with [`crate::service!`] (what the generated clients do):
    /// the call carries the declaration's fingerprint, and a callee whose own declaration
    /// differs answers `bad_arguments` naming both signatures.
    ///
    /// # Errors
    /// As [`Peer::call`].
    #[doc(hidden)]
    pub async fn call_declared<A: Serialize, R: DeserializeOwned>(
        &self,
        info: &'static MethodInfo,
        args: &A,
    ) -> Result<R, RpcError> {
        let call = Call {
            method: info.name,
            encoding: Encoding::Bincode,
            signature: Some(info.fingerprint),
        };
        let sent = self.send(call, args, CallOptions::default()).await;
        let (encoding, body) = sent.map_err(|e| match e {
            RpcError::BadArguments { method, detail } => RpcError::BadArguments {
                method,
                detail: format!("{detail}; this caller declares `{}`", info.signature()),
            },
            other => other,
        })?;
        decode_typed(info.name, encoding, &body)
    }

    /// Calls `method` with `args` (bincode) and returns the result's bytes undecoded (bincode):
    /// for proxies, and for load generators that must not pay for decoding.
    ///
    /// # Errors
    /// As [`Peer::call`].
    pub async fn call_raw(
        &self,
        method: &str,
        args: impl Serialize,
        options: CallOptions,
    ) -> Result<bytes::Bytes, RpcError> {
        let (_, body) = self.send(Call::bincode(method), &args, options).await?;
        Ok(body)
    }

    /// Calls `method` with JSON arguments (a positional array, or an object naming them) and
    /// returns the JSON result: the path of dynamic callers such as the CLI and the gateway.
    /// `args` may be a [`serde_json::Value`] or, to keep numbers exactly as written, a
    /// [`serde_json::value::RawValue`].
    pub async fn call_json<A: Serialize + ?Sized>(
        &self,
        method: &str,
        args: &A,
        options: CallOptions,
    ) -> Result<serde_json::Value, RpcError> {
        let call = Call {
            method,
            encoding: Encoding::Json,
            signature: None,
        };
        let (encoding, body) = self.send(call, args, options).await?;
        decode_result(encoding, &body)
            .map_err(|e| RpcError::Protocol(format!("cannot decode the result of `{method}`: {e}")))
    }

    /// Sends a one-way message: no reply, and the callee's errors are only logged there.
    ///
    /// # Errors
    /// `Disconnected` if the link is closed, `FrameTooLarge`, or `BadArguments` if `args`
    /// cannot be encoded.
    pub fn cast(&self, method: &str, args: impl Serialize) -> Result<(), RpcError> {
        self.check_open()?;
        self.conn.cast(method, Encoding::Bincode, &args)
    }

    fn check_open(&self) -> Result<(), RpcError> {
        if self.closing.load(Ordering::Relaxed) {
            return Err(RpcError::Shutdown("this node is shutting down".to_owned()));
        }
        Ok(())
    }
}

/// Decodes a typed result; a mismatch is the caller's mistake, reported as such.
pub(crate) fn decode_typed<R: DeserializeOwned>(
    method: &str,
    encoding: Encoding,
    body: &[u8],
) -> Result<R, RpcError> {
    decode_result(encoding, body).map_err(|e| {
        RpcError::Protocol(format!(
            "cannot decode the result of `{method}` as {}: {e}",
            std::any::type_name::<R>()
        ))
    })
}

/// A connection to a node from a program that only calls (it serves no methods): calls go
/// through its [`Peer`] ([`Client::peer`]). Dropping it closes the connection.
pub struct Client {
    peer: Peer,
    token: CancellationToken,
    tasks: TaskTracker,
}

impl Client {
    /// Connects to the node at `addr` (a `SocketAddr` or `"HOST:PORT"`; a name is resolved
    /// and each address tried) with default settings.
    ///
    /// # Errors
    /// `PeerUnavailable` if it cannot be reached, `Unauthenticated` if it refuses this side's
    /// cookie or certificate, `Protocol` if the handshake fails or the port is not a meshrpc
    /// node's.
    pub async fn connect(addr: impl ToString) -> Result<Client, RpcError> {
        Client::connect_with(
            addr,
            &NodeConfig {
                name: "client".to_owned(),
                ..NodeConfig::default()
            },
        )
        .await
    }

    /// Connects with the name, credentials (the cookie if set, else the client secret),
    /// timeouts and limits of `config` (its listen address, seeds and mailbox are unused).
    ///
    /// # Errors
    /// As [`Client::connect`].
    pub async fn connect_with(
        addr: impl ToString,
        config: &NodeConfig,
    ) -> Result<Client, RpcError> {
        let addr = addr.to_string();
        let addr = addr.as_str();
        let unavailable = |reason: String| RpcError::PeerUnavailable {
            peer: addr.to_owned(),
            reason,
        };
        config
            .validate()
            .map_err(|e| unavailable(format!("invalid client configuration: {e}")))?;
        let resolved: Vec<SocketAddr> = tokio::net::lookup_host(addr)
            .await
            .map_err(|e| unavailable(format!("cannot resolve: {e}")))?
            .collect();
        let identity = Identity {
            id: NodeId::random(),
            name: config.name.clone(),
            listen: None,
            max_frame: config.max_frame as u32,
            incarnation: 0,
        };
        let tls = match &config.tls {
            Some(files) => {
                Some(Tls::load(files).map_err(|e| unavailable(format!("TLS configuration: {e}")))?)
            }
            None => None,
        };
        let local = Local {
            identity: &identity,
            cookie: config.cookie.as_deref(),
            client_secret: config.client_secret.as_deref(),
            timeout: config.handshake_timeout,
            tls: tls.as_ref(),
            probe: true,
            versions: config.protocol_versions(),
            gateway: None,
        };
        let mut last = unavailable("the name resolved to no address".to_owned());
        for target in resolved {
            match Client::handshake(target, local, config).await {
                Ok(client) => return Ok(client),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn handshake(
        target: SocketAddr,
        local: Local<'_>,
        config: &NodeConfig,
    ) -> Result<Client, RpcError> {
        let mut socket = transport::connect(target, config.connect_timeout, local).await?;
        let greeting = transport::read_greeting(&mut socket, local).await?;
        if !transport::introduce(&mut socket, local, &greeting).await? {
            return Err(RpcError::Protocol(format!(
                "{target} answered a client's hello with `Duplicate`"
            )));
        }
        Ok(Client::start(socket, &greeting.identity, config))
    }

    /// A client over an established socket to the node `theirs`, after the handshake.
    pub(crate) fn start(
        socket: transport::Socket,
        theirs: &Identity,
        config: &NodeConfig,
    ) -> Client {
        let token = CancellationToken::new();
        let tasks = TaskTracker::new();
        let closing = Arc::new(AtomicBool::new(false));
        let ctx = LinkCtx {
            dispatch: Arc::new(NoMethods),
            limits: Arc::new(Limits::new(closing.clone(), config, false)),
            tasks: tasks.clone(),
        };
        let peer = transport::peer_info(theirs, &socket);
        let parts = Parts {
            socket,
            peer,
            conn_id: 0,
            outbound: true,
            max_frame: config.max_frame.min(theirs.max_frame as usize),
            max_frame_in: config.max_frame,
            heartbeat: config.heartbeat,
            silence: config.down_after,
        };
        let conn = Connection::start(parts, None, ctx, token.child_token(), |_, _| {});
        let peer = Peer {
            conn,
            default_timeout: config.default_timeout,
            closing,
        };
        Client { peer, token, tasks }
    }

    /// The node at the other end: call it, cast to it, open streams on it.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// Closes the connection and waits for its tasks to end.
    pub async fn close(self) {
        self.peer.conn.close("client closed", false);
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl From<&Client> for Peer {
    fn from(client: &Client) -> Peer {
        client.peer.clone()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::time::Duration;

    use tokio::time::Instant;

    use super::{retrying, CallOptions};
    use crate::error::RpcError;

    fn overloaded() -> RpcError {
        RpcError::Overloaded {
            method: "m".into(),
            message: "full".into(),
        }
    }

    fn timed_out() -> RpcError {
        RpcError::Timeout {
            method: "m".into(),
            after: Duration::from_secs(1),
        }
    }

    /// Runs `retrying` over `answers` (one per attempt); returns the result, whether each
    /// attempt was marked a retry, and the virtual time it took.
    async fn run(
        retries: u32,
        answers: Vec<Result<u32, RpcError>>,
    ) -> (Result<u32, RpcError>, Vec<bool>, Duration) {
        let answers = RefCell::new(answers.into_iter());
        let marks = RefCell::new(Vec::new());
        let started = Instant::now();
        let options = CallOptions::timeout(Duration::from_secs(1)).retries(retries);
        let result = retrying(options, |retry| {
            marks.borrow_mut().push(retry);
            let next = answers.borrow_mut().next().expect("an answer per attempt");
            async move { next }
        })
        .await;
        (result, marks.into_inner(), started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn retries_back_off_exponentially_with_jitter() {
        let answers = vec![
            Err(overloaded()),
            Err(overloaded()),
            Err(overloaded()),
            Ok(7),
        ];
        let (result, marks, took) = run(3, answers).await;
        assert_eq!(result.ok(), Some(7));
        // Nothing ran on an `overloaded` refusal: no attempt is a retry.
        assert_eq!(marks, [false, false, false, false]);
        // 20 + 40 + 80 ms, each up to half as long again.
        let least = Duration::from_millis(140);
        assert!(took >= least && took <= least.mul_f64(1.5), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_may_have_run_is_resent_as_a_retry_and_stops_where_refused() {
        // After a timeout the next attempt is a retry; a callee refusing it ends the loop
        // with what happened before.
        let refused = RpcError::RetryRefused {
            method: "m".into(),
            message: "not idempotent".into(),
        };
        let (result, marks, _) = run(3, vec![Err(timed_out()), Err(refused)]).await;
        assert!(
            matches!(result, Err(RpcError::Timeout { .. })),
            "{result:?}"
        );
        assert_eq!(marks, [false, true]);
        // An application error is the answer: never resent.
        let failed = RpcError::Application {
            method: "m".into(),
            message: "no".into(),
            data: None,
        };
        let (result, marks, took) = run(3, vec![Err(failed)]).await;
        assert!(matches!(result, Err(RpcError::Application { .. })));
        assert_eq!((marks.len(), took), (1, Duration::ZERO));
        // Out of retries: the last error.
        let (result, marks, _) = run(1, vec![Err(overloaded()), Err(timed_out())]).await;
        assert!(matches!(result, Err(RpcError::Timeout { .. })));
        assert_eq!(marks.len(), 2);
    }
}
