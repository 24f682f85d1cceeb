//! Telling what answered when a plain client reached something that is not a meshrpc node:
//! an HTTP server (another server, or the node's own `--http` port), a node that speaks
//! TLS, or any other protocol. A meshrpc acceptor greets at once; a server that waits to be
//! spoken to gets [`PROBE`] after [`PROBE_AFTER`] of silence, so the answer comes within a
//! second instead of after the handshake timeout. Pure functions over the first bytes.

use std::time::Duration;

/// Silence after which a plain client speaks first.
pub(crate) const PROBE_AFTER: Duration = Duration::from_millis(500);

/// What it says: an HTTP request (HTTP servers answer it; TLS servers answer it with an
/// alert or close).
pub(crate) const PROBE: &[u8] = b"GET / HTTP/1.0\r\n\r\n";

/// What the first bytes say about the other side, if they say anything.
pub(crate) fn describe(first: &[u8]) -> Option<String> {
    if first.starts_with(b"HTTP/") {
        return Some(
            "answered HTTP: it is not a meshrpc port; is it a node's --http port? \
             (call that with an HTTP client, or give meshrpc the node's --listen address)"
                .to_owned(),
        );
    }
    if let [0x14..=0x17, 0x03, 0x00..=0x04, ..] = first {
        return Some(
            "answered with TLS: the node uses TLS; give this side --tls-cert, --tls-key and \
             --tls-ca"
                .to_owned(),
        );
    }
    if first.is_empty() {
        return None;
    }
    let shown: String = first
        .iter()
        .take(16)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        })
        .collect();
    Some(format!("answered `{shown}`: it is not a meshrpc port"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_tell_http_tls_and_strangers_apart() {
        assert!(describe(b"HTTP/1.1 404 Not Found\r\n")
            .unwrap()
            .contains("HTTP"));
        assert!(describe(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32])
            .unwrap()
            .contains("TLS"));
        assert!(describe(b"SSH-2.0-OpenSSH_9.2\r\n")
            .unwrap()
            .contains("`SSH-2.0-"));
        assert_eq!(describe(b""), None);
    }
}
