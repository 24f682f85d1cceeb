//! TLS for node links (rustls, ring): every link is mutual TLS against a cluster CA. Each
//! side presents a certificate signed by the CA and verifies the other's; the dialer also
//! checks the certificate names the address it dialed (IP SANs for IPs). The meshrpc
//! handshake and its cookie check run inside the TLS session; a node's certificate must
//! also name the node it announces (its `--name`, a DNS SAN: [`names`]), so a certificate
//! issued to one node cannot pose as another.
//!
//! Development certificates are minted by the `meshrpc` binary (`meshrpc tls-gen`). Built
//! with the `tls` feature (on by default); without it, `tls_off.rs` stands in.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::TlsConfig;

/// The certificate the other end of a link presented (its first).
pub(crate) type PeerCert = CertificateDer<'static>;

/// The gateway's HTTPS acceptor.
#[cfg_attr(not(feature = "gateway"), allow(dead_code))] // HTTPS for the gateway
pub(crate) type HttpsAcceptor = TlsAcceptor;

/// The two halves of a TLS session, and the peer's certificate.
pub(crate) type Session = (
    Box<dyn AsyncRead + Send + Unpin>,
    Box<dyn AsyncWrite + Send + Unpin>,
    Option<PeerCert>,
);

/// Runs the TLS handshake on `stream` as its dialer (checking the certificate names
/// `remote`) or its acceptor.
pub(crate) async fn session(
    tls: &Tls,
    dialer: bool,
    stream: TcpStream,
    remote: SocketAddr,
) -> std::io::Result<Session> {
    fn first(certs: Option<&[CertificateDer<'_>]>) -> Option<PeerCert> {
        certs
            .and_then(|c| c.first())
            .map(|c| c.clone().into_owned())
    }
    if dialer {
        let session = tls.connector.connect(server_name(remote), stream).await?;
        let cert = first(session.get_ref().1.peer_certificates());
        let (read, write) = tokio::io::split(session);
        Ok((Box::new(read), Box::new(write), cert))
    } else {
        let session = tls.acceptor.accept(stream).await?;
        let cert = first(session.get_ref().1.peer_certificates());
        let (read, write) = tokio::io::split(session);
        Ok((Box::new(read), Box::new(write), cert))
    }
}

/// Runs the HTTPS handshake of a gateway connection.
#[cfg_attr(not(feature = "gateway"), allow(dead_code))] // HTTPS for the gateway
pub(crate) async fn accept_https(
    acceptor: &HttpsAcceptor,
    stream: TcpStream,
) -> std::io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
    acceptor.accept(stream).await
}

/// Whether a read failed because of TLS (a refused certificate arrives this way).
pub(crate) fn is_tls_error(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>())
}

/// Loaded TLS state: both directions, since every node dials and accepts.
#[derive(Clone)]
pub(crate) struct Tls {
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) connector: TlsConnector,
}

impl Tls {
    /// Reads the files and builds the rustls configurations; the error names the file.
    pub(crate) fn load(config: &TlsConfig) -> Result<Tls, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = read_certs(&config.cert)?;
        let key = PrivateKeyDer::from_pem_file(&config.key)
            .map_err(|e| format!("{}: {e}", config.key.display()))?;
        let mut roots = RootCertStore::empty();
        for ca in read_certs(&config.ca)? {
            roots
                .add(ca)
                .map_err(|e| format!("{}: {e}", config.ca.display()))?;
        }
        let roots = Arc::new(roots);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| format!("client verifier: {e}"))?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|e| format!("{}: {e}", config.cert.display()))?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|e| format!("{}: {e}", config.cert.display()))?;
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        })
    }
}

/// An HTTPS acceptor with the node's certificate, for the gateway (`--http-tls`): clients
/// are not asked for certificates (HTTP callers authenticate with the gateway token).
///
/// # Errors
/// If a file cannot be read or does not hold what it should; the message names the file.
#[cfg_attr(not(feature = "gateway"), allow(dead_code))] // HTTPS for the gateway
pub(crate) fn https_acceptor(config: &TlsConfig) -> Result<TlsAcceptor, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs(&config.cert)?;
    let key = PrivateKeyDer::from_pem_file(&config.key)
        .map_err(|e| format!("{}: {e}", config.key.display()))?;
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("{}: {e}", config.cert.display()))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect();
    let certs = certs.map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", path.display()));
    }
    Ok(certs)
}

/// What went wrong in a TLS handshake (or in the first read after it, where TLS 1.3 reports
/// a client certificate refused by the server), in plain words; `auth` when it is about a
/// certificate rather than the network.
pub(crate) struct Failure {
    pub(crate) auth: bool,
    pub(crate) reason: String,
}

/// Explains a TLS error for the side that saw it, speaking of the other side as "it".
pub(crate) fn explain(error: &std::io::Error) -> Failure {
    use rustls::{AlertDescription, CertificateError, Error};
    let Some(tls) = error.get_ref().and_then(|e| e.downcast_ref::<Error>()) else {
        return Failure {
            auth: false,
            reason: format!("TLS handshake failed: {error}"),
        };
    };
    let auth = |reason: &str| Failure {
        auth: true,
        reason: reason.to_owned(),
    };
    match tls {
        // Another CA with the same name is found as the issuer and fails the signature.
        Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => {
            auth("this side refused its certificate: it is not signed by this side's CA (--tls-ca)")
        }
        Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => auth("this side refused its certificate: it does not name the address dialed"),
        Error::InvalidCertificate(
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. },
        ) => auth("this side refused its certificate: it is expired or not valid yet"),
        Error::InvalidCertificate(other) => Failure {
            auth: true,
            reason: format!("this side refused its certificate: {other:?}"),
        },
        Error::NoCertificatesPresented => {
            auth("this side refused it: it presented no certificate (--tls-cert, --tls-key)")
        }
        Error::AlertReceived(
            AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::DecryptError
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateRequired,
        ) => auth("it refused this side's certificate: not signed by its CA, or none was given"),
        // A plain node greets in plain text at once: the TLS client reads it as garbage.
        Error::InvalidMessage(_) => Failure {
            auth: false,
            reason: "it answered in plain text, not TLS: it does not use TLS (drop --tls-* on this side, or give it TLS)".to_owned(),
        },
        Error::AlertReceived(AlertDescription::CertificateExpired) => {
            auth("it refused this side's certificate: expired")
        }
        other => Failure {
            auth: false,
            reason: format!("TLS handshake failed: {other}"),
        },
    }
}

/// Whether `cert` (DER) names the node `name` (a DNS SAN); the error says why not.
pub(crate) fn names(cert: &PeerCert, name: &str) -> Result<(), String> {
    let parsed = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| format!("its certificate cannot be read: {e}"))?;
    let dns = ServerName::try_from(name).map_err(|_| {
        format!("its name `{name}` is not a DNS name, so no certificate can name it: under TLS, give nodes DNS-style names")
    })?;
    parsed
        .verify_is_valid_for_subject_name(&dns)
        .map_err(|_| format!("its certificate does not name `{name}`, the node it claims to be"))
}

/// The name the dialer expects in the acceptor's certificate: the IP it dialed.
fn server_name(addr: SocketAddr) -> ServerName<'static> {
    ServerName::IpAddress(addr.ip().into())
}
