//! Development certificates (rcgen), for `meshrpc tls-gen` (which the tests run): a cluster CA and,
//! signed by it, one certificate per node or client name. An existing CA in the folder is
//! reused, so certificates issued before keep verifying; replacing it is explicit. Private
//! keys are written readable by their owner only.

use std::path::Path;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// Where the CA that signed the new certificates came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ca {
    /// `ca.pem` and `ca-key.pem` were in the folder and were used.
    Reused,
    /// There was no CA in the folder: one was made.
    Created,
    /// A CA was in the folder and was replaced: certificates it signed no longer verify
    /// against the new `ca.pem`.
    Replaced,
}

/// For each name, writes `NAME.pem` / `NAME-key.pem` into `dir`: a certificate for that node
/// (or client) valid for `localhost`, `127.0.0.1`, `::1` and the name itself, for both server
/// and client authentication, signed by the CA in `dir` (`ca.pem`, `ca-key.pem`), which is
/// made first if there is none.
///
/// # Errors
/// If the CA in `dir` cannot be read (or only half of it is there), a key or certificate
/// cannot be made, or a file cannot be written.
pub fn generate(dir: &Path, names: &[&str]) -> Result<Ca, String> {
    issue(dir, names, false)
}

/// [`generate`], with a new CA even when `dir` has one: every certificate the old one signed
/// stops verifying against the new `ca.pem`.
///
/// # Errors
/// As [`generate`].
pub fn generate_with_new_ca(dir: &Path, names: &[&str]) -> Result<Ca, String> {
    issue(dir, names, true)
}

fn issue(dir: &Path, names: &[&str], new_ca: bool) -> Result<Ca, String> {
    let err = |e: rcgen::Error| e.to_string();
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (ca_cert, ca_key, source) = ca(dir, new_ca)?;
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
        write(dir, &format!("{name}.pem"), &cert.pem(), false)?;
        write(dir, &format!("{name}-key.pem"), &key.serialize_pem(), true)?;
    }
    Ok(source)
}

/// The CA in `dir`, or a new one (written there).
fn ca(dir: &Path, new_ca: bool) -> Result<(Certificate, KeyPair, Ca), String> {
    let err = |e: rcgen::Error| e.to_string();
    let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    let present = (cert_path.exists(), key_path.exists());
    if present == (true, true) && !new_ca {
        let read =
            |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
        let key = KeyPair::from_pem(&read(&key_path)?)
            .map_err(|e| format!("{}: {e}", key_path.display()))?;
        // Rebuilt from the certificate itself (name, key identifier), so what it signs now
        // chains to the `ca.pem` already handed out.
        let params = CertificateParams::from_ca_cert_pem(&read(&cert_path)?)
            .map_err(|e| format!("{}: {e}", cert_path.display()))?;
        let cert = params.self_signed(&key).map_err(err)?;
        return Ok((cert, key, Ca::Reused));
    }
    if present.0 != present.1 && !new_ca {
        let (have, missing) = if present.0 {
            (&cert_path, &key_path)
        } else {
            (&key_path, &cert_path)
        };
        return Err(format!(
            "{} is there but {} is not: cannot sign with half a CA (a new CA, with --force, makes every certificate it signed stop verifying)",
            have.display(),
            missing.display()
        ));
    }
    let key = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "meshrpc development CA");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).map_err(err)?;
    write(dir, "ca.pem", &cert.pem(), false)?;
    write(dir, "ca-key.pem", &key.serialize_pem(), true)?;
    let source = if present.0 || present.1 {
        Ca::Replaced
    } else {
        Ca::Created
    };
    Ok((cert, key, source))
}

/// Writes `pem` to `dir/file`; a private key is made readable by its owner only (0600),
/// also when the file was there before.
fn write(dir: &Path, file: &str, pem: &str, private: bool) -> Result<(), String> {
    use std::io::Write;
    let path = dir.join(file);
    let fail = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        // `mode` applies only to a file being created: tighten one that exists first, before
        // the new key is written into it.
        if path.exists() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(fail)?;
        }
    }
    let mut out = options.open(&path).map_err(fail)?;
    out.write_all(pem.as_bytes()).map_err(fail)
}
