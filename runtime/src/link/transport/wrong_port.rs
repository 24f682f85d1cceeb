//! An HTTP client on the binary port: the tutorial's `ServerProxy("http://localhost:4000")`
//! aimed at the node's binary port instead of its gateway. A meshrpc dialer says nothing
//! until it is greeted; an HTTP client sends its request at once. So before greeting, a
//! plain (not TLS) acceptor looks ([`http_request`]) at what the other side sent, waiting
//! up to [`SNIFF`]: a request line is answered with `400 Bad Request` whose reason phrase
//! and body name the node's HTTP gateway (or say it has none), and the connection closes.
//! Anything else is greeted as before; bytes that arrive later than the window get the
//! greeting, as they always did. A TLS port is left alone: it answers anything but a
//! ClientHello with a TLS alert, which is how a plain client's probe tells it uses TLS.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::link::sniff;

/// How long a plain acceptor waits for an HTTP client's request before greeting: what
/// every link's handshake pays once, on the acceptor's side.
pub(super) const SNIFF: Duration = Duration::from_millis(2);

const METHODS: [&[u8]; 8] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"HEAD ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
];

/// What the first bytes of the connection are, looking for up to `wait`.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum First {
    /// Nothing yet, or not HTTP: greet.
    Greet,
    /// A plain meshrpc client's probe ([`sniff::PROBE`]): its acceptor was slow to greet.
    /// It has been read off; greet, and the client goes on.
    Probe,
    /// An HTTP request: answer it.
    Http,
}

/// Looks at the first bytes of the connection for up to `wait`.
pub(super) async fn first(stream: &TcpStream, wait: Duration) -> First {
    let mut head = [0u8; 32];
    let n = match tokio::time::timeout(wait, stream.peek(&mut head)).await {
        Ok(Ok(n)) => n,
        _ => return First::Greet,
    };
    let head = &head[..n];
    if !METHODS.iter().any(|m| head.starts_with(m)) {
        return First::Greet;
    }
    if sniff::PROBE.starts_with(head) || head.starts_with(sniff::PROBE) {
        // Maybe our own client's probe: read it whole (it is sent in one write).
        let mut probe = [0u8; sniff::PROBE.len()];
        let whole = tokio::time::timeout(wait.max(PROBE_WAIT), stream.peek(&mut probe)).await;
        if matches!(whole, Ok(Ok(n)) if n == probe.len()) && probe == sniff::PROBE {
            let mut gone = [0u8; sniff::PROBE.len()];
            if let Ok(Ok(())) =
                tokio::time::timeout(PROBE_WAIT, read_exact(stream, &mut gone)).await
            {
                return First::Probe;
            }
        }
    }
    First::Http
}

/// How long to wait for the rest of a probe whose start arrived.
const PROBE_WAIT: Duration = Duration::from_millis(100);

/// Reads exactly `buf.len()` bytes that `peek` has shown are there.
async fn read_exact(stream: &TcpStream, buf: &mut [u8]) -> std::io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        stream.readable().await?;
        match stream.try_read(&mut buf[got..]) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Answers the HTTP client with the hint, then closes. `gateway` is where the gateway
/// listens, and whether it speaks HTTPS.
pub(super) async fn answer(mut stream: TcpStream, node: &str, gateway: Option<(SocketAddr, bool)>) {
    // A gateway bound to every address is named by the address this client reached.
    let url = gateway.map(|(mut addr, https)| {
        if addr.ip().is_unspecified() {
            if let Ok(here) = stream.local_addr() {
                addr.set_ip(here.ip());
            }
        }
        format!("{}://{addr}/", if https { "https" } else { "http" })
    });
    let (reason, body) = hint(node, url.as_deref());
    let response = format!(
        "HTTP/1.1 400 {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let written = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        // Read what the client sent until it closes: a socket closed with unread bytes
        // resets the connection, and the answer could be lost with it.
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    // A client that does not read, or never closes, gets a second of patience.
    let _ = tokio::time::timeout(Duration::from_secs(1), written).await;
}

/// The reason phrase (what `xmlrpc.client`'s `ProtocolError` shows) and the body.
fn hint(node: &str, gateway: Option<&str>) -> (String, String) {
    match gateway {
        Some(url) => (
            format!("Bad Request: this is a meshrpc binary port; its HTTP gateway is {url}"),
            format!(
                "This is the binary (meshrpc) port of node {node}, not HTTP.\n\
                 Its HTTP gateway (XML-RPC, JSON-RPC) is {url}\n\
                 From Python without HTTP: meshrpc.ServerProxy(\"mesh://HOST:PORT\") on this port.\n"
            ),
        ),
        None => (
            "Bad Request: this is a meshrpc binary port; the node has no HTTP gateway (--http)"
                .to_owned(),
            format!(
                "This is the binary (meshrpc) port of node {node}, not HTTP, and the node has \
                 no HTTP gateway.\nStart it with --http HOST:PORT for XML-RPC and JSON-RPC, \
                 or call this port with meshrpc.ServerProxy(\"mesh://HOST:PORT\").\n"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    async fn exchange(send: &[u8], gateway: Option<(SocketAddr, bool)>) -> (bool, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(send).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let seen = first(&server, Duration::from_secs(5)).await == First::Http;
        if seen {
            answer(server, "a", gateway).await;
        }
        let mut got = String::new();
        if seen {
            client.read_to_string(&mut got).await.unwrap();
        }
        (seen, got)
    }

    #[tokio::test]
    async fn an_http_request_gets_a_400_naming_the_gateway() {
        // Bound to every address, the gateway is named by the one the client reached.
        let gateway = Some(("0.0.0.0:8000".parse().unwrap(), false));
        let (seen, got) = exchange(b"POST /RPC2 HTTP/1.1\r\n\r\n", gateway).await;
        assert!(seen);
        assert!(
            got.starts_with("HTTP/1.1 400 Bad Request: this is a meshrpc binary port; its HTTP gateway is http://127.0.0.1:8000/\r\n"),
            "{got}"
        );
        let body = got.split("\r\n\r\n").nth(1).unwrap();
        let length: usize = got
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(body.len(), length);
        let (_, got) = exchange(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", None).await;
        assert!(got.contains("no HTTP gateway (--http)"), "{got}");
    }

    #[tokio::test]
    async fn anything_else_is_not_http() {
        // A meshrpc frame's length prefix, and a TLS ClientHello's first bytes.
        for bytes in [&b"\0\0\0\x3fMRPC"[..], &[0x16, 0x03, 0x01, 0x02, 0x00][..]] {
            assert!(!exchange(bytes, None).await.0);
        }
    }

    #[tokio::test]
    async fn a_plain_clients_probe_is_read_off_and_greeted() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        client.write_all(sniff::PROBE).await.unwrap();
        client.write_all(b"after").await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        assert_eq!(first(&server, Duration::from_secs(5)).await, First::Probe);
        // The probe is gone; what follows it is not.
        let mut rest = [0u8; 5];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"after");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_dialer_is_greeted_after_the_window() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        assert_eq!(first(&server, SNIFF).await, First::Greet);
    }
}
