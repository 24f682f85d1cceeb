//! The gateway's HTTP server: accepts connections up to a cap (beyond it they are closed at
//! once, so stalled clients cannot exhaust file descriptors), runs TLS first for `--http-tls`,
//! and serves each connection with hyper under the header timeout (which also closes idle
//! keep-alive connections). Connection tasks run on the node's tracker and stop with the
//! intake token.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::link::tls::{self, HttpsAcceptor};
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::link::LogLimit;

/// What a request handler answers: a whole response.
pub(crate) type Reply = hyper::Response<http_body_util::Full<bytes::Bytes>>;

/// How the server runs.
pub(crate) struct ServerCtx {
    pub(crate) tls: Option<HttpsAcceptor>,
    pub(crate) header_timeout: Duration,
    pub(crate) max_connections: usize,
    pub(crate) intake: CancellationToken,
    pub(crate) tasks: TaskTracker,
}

/// Accepts on `listener` until the intake token is cancelled; `handle` answers each request,
/// told the address it came from.
pub(crate) async fn run<H, Fut>(ctx: ServerCtx, listener: TcpListener, handle: H)
where
    H: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(ctx.max_connections));
    let refusals = LogLimit::default();
    loop {
        let stream = tokio::select! {
            _ = ctx.intake.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (stream, remote) = stream;
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Refused at once rather than queued: a queue would hold the descriptor anyway.
            if let Some(more) = refusals.admit() {
                warn!(
                    limit = ctx.max_connections,
                    more, "too many HTTP connections; closing new ones"
                );
            }
            drop(stream);
            continue;
        };
        let (tls, timeout, intake) = (ctx.tls.clone(), ctx.header_timeout, ctx.intake.clone());
        let handle = handle.clone();
        ctx.tasks.spawn(async move {
            let _slot = slot;
            tokio::select! {
                _ = serve(stream, remote, tls, timeout, handle) => {}
                _ = intake.cancelled() => {}
            }
        });
    }
}

async fn serve<H, Fut>(
    stream: TcpStream,
    remote: SocketAddr,
    tls: Option<HttpsAcceptor>,
    timeout: Duration,
    handle: H,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    let _ = stream.set_nodelay(true);
    let handle = move |req| handle(req, remote);
    match tls {
        None => http1(stream, timeout, handle).await,
        Some(acceptor) => {
            match tokio::time::timeout(timeout, tls::accept_https(&acceptor, stream)).await {
                Ok(Ok(session)) => http1(session, timeout, handle).await,
                Ok(Err(error)) => debug!(%error, "https: TLS handshake failed"),
                Err(_) => debug!("https: no TLS handshake within the header timeout"),
            }
        }
    }
}

async fn http1<S, H, Fut>(io: S, timeout: Duration, handle: H)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let answer = handle(req);
        async move { Ok::<_, Infallible>(answer.await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The header timer starts whenever the connection waits for a request, the first or the
    // next one: a stalled half-request and an idle keep-alive connection both end there.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeout);
    if let Err(error) = builder.serve_connection(TokioIo::new(io), service).await {
        debug!(%error, "http connection ended");
    }
}
