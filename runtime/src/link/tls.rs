//! TLS for node links (rustls, ring): every link is mutual TLS against a cluster CA. Each
//! side presents a certificate signed by the CA and verifies the other's; the dialer also
//! checks the certificate names the address it dialed (IP SANs for IPs). The meshrpc
//! handshake and its cookie check run inside the TLS session unchanged.
//!
//! [`dev::generate`] writes a development CA and certificates (rcgen), for
//! `meshrpc tls-gen` and the tests.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::{TlsAcceptor, TlsConnector};

pub use crate::config::TlsConfig;

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

/// The name the dialer expects in the acceptor's certificate: the IP it dialed.
pub(crate) fn server_name(addr: SocketAddr) -> ServerName<'static> {
    ServerName::IpAddress(addr.ip().into())
}

/// Development certificates.
pub mod dev {
    use std::path::Path;

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };

    /// Writes `ca.pem` / `ca-key.pem` (a new CA) and, for each name, `NAME.pem` /
    /// `NAME-key.pem`: a certificate for that node (or client) valid for `localhost`,
    /// `127.0.0.1`, `::1` and the name itself, for both server and client authentication.
    ///
    /// # Errors
    /// If a key or certificate cannot be made, or a file cannot be written.
    pub fn generate(dir: &Path, names: &[&str]) -> Result<(), String> {
        let err = |e: rcgen::Error| e.to_string();
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let ca_key = KeyPair::generate().map_err(err)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "meshrpc development CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
        write(dir, "ca.pem", &ca_cert.pem())?;
        write(dir, "ca-key.pem", &ca_key.serialize_pem())?;
        for name in names {
            let key = KeyPair::generate().map_err(err)?;
            let sans = vec![
                "localhost".to_owned(),
                "127.0.0.1".to_owned(),
                "::1".to_owned(),
                (*name).to_owned(),
            ];
            let mut params = CertificateParams::new(sans).map_err(err)?;
            params.distinguished_name.push(DnType::CommonName, *name);
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let cert = params.signed_by(&key, &ca_cert, &ca_key).map_err(err)?;
            write(dir, &format!("{name}.pem"), &cert.pem())?;
            write(dir, &format!("{name}-key.pem"), &key.serialize_pem())?;
        }
        Ok(())
    }

    fn write(dir: &Path, file: &str, pem: &str) -> Result<(), String> {
        let path = dir.join(file);
        std::fs::write(&path, pem).map_err(|e| format!("{}: {e}", path.display()))
    }
}
