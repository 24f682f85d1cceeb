//! Built without the `tls` feature: this build has no TLS. Every TLS type is uninhabited, so
//! no code path can reach a TLS session; a node or client given certificates refuses to
//! start, saying why ([`Tls::load`]).

use std::net::SocketAddr;

use tokio::net::TcpStream;

use crate::config::TlsConfig;

const NO_TLS: &str =
    "this build of meshrpc has no TLS: build it with the `tls` feature (on by default)";

/// Never made: see the module doc.
#[derive(Clone)]
pub(crate) enum Tls {}

/// Never made.
pub(crate) enum PeerCert {}

/// Never made.
#[cfg_attr(not(feature = "gateway"), allow(dead_code))] // read by the gateway
#[derive(Clone)]
pub(crate) enum HttpsAcceptor {}

impl Tls {
    pub(crate) fn load(_: &TlsConfig) -> Result<Tls, String> {
        Err(NO_TLS.to_owned())
    }
}

#[cfg_attr(not(feature = "gateway"), allow(dead_code))] // read by the gateway
pub(crate) fn https_acceptor(_: &TlsConfig) -> Result<HttpsAcceptor, String> {
    Err(NO_TLS.to_owned())
}

pub(crate) type Session = (
    Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
    Option<PeerCert>,
);

pub(crate) async fn session(
    tls: &Tls,
    _: bool,
    _: TcpStream,
    _: SocketAddr,
) -> std::io::Result<Session> {
    match *tls {}
}

#[cfg_attr(not(feature = "gateway"), allow(dead_code))] // read by the gateway
pub(crate) async fn accept_https(
    acceptor: &HttpsAcceptor,
    _: TcpStream,
) -> std::io::Result<TcpStream> {
    match *acceptor {}
}

pub(crate) fn is_tls_error(_: &std::io::Error) -> bool {
    false
}

pub(crate) fn names(cert: &PeerCert, _: &str) -> Result<(), String> {
    match *cert {}
}

/// See the `tls` feature's `explain`.
pub(crate) struct Failure {
    pub(crate) auth: bool,
    pub(crate) reason: String,
}

pub(crate) fn explain(error: &std::io::Error) -> Failure {
    Failure {
        auth: false,
        reason: format!("TLS handshake failed: {error}"),
    }
}
