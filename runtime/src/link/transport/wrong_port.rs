//! An HTTP client on the binary port: the tutorial's `ServerProxy("http://localhost:4000")`
//! aimed at the node's binary port instead of its gateway. A meshrpc dialer says nothing
//! until it is greeted; an HTTP client sends its request at once. So before greeting, a
//! plain (not TLS) acceptor looks ([`http_request`]) at what the other side sent, waiting
//! up to [`SNIFF`]: a request line is answered with `400 Bad Request` whose reason phrase
//! and body name the node's HTTP gateway (or say it has none), and the connection closes.
//! Anything else is greeted as before; bytes that arrive later than the window get the
//! greeting, as they always did. A TLS port is left alone: it answers anything but a
//! ClientHello with a TLS alert, which is how a plain client's probe tells it uses TLS.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

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

/// Whether the first bytes of the connection are an HTTP request line, looking for up to
/// `wait`.
pub(super) async fn http_request(stream: &TcpStream, wait: Duration) -> bool {
    let mut head = [0u8; 8];
    match tokio::time::timeout(wait, stream.peek(&mut head)).await {
        Ok(Ok(n)) => METHODS.iter().any(|m| head[..n].starts_with(m)),
        _ => false,
    }
}

/// Answers the HTTP client with the hint, then closes. `gateway` is the gateway's URL.
pub(super) async fn answer(mut stream: TcpStream, node: &str, gateway: Option<&str>) {
    let (reason, body) = hint(node, gateway);
    let response = format!(
        "HTTP/1.1 400 {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let written = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    };
    // A client that does not read gets nothing more than the handshake's patience.
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

    async fn exchange(send: &[u8], gateway: Option<&str>) -> (bool, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(send).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let seen = http_request(&server, Duration::from_secs(5)).await;
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
        let (seen, got) = exchange(
            b"POST /RPC2 HTTP/1.1\r\n\r\n",
            Some("http://127.0.0.1:8000/"),
        )
        .await;
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
        let (_, got) = exchange(b"GET / HTTP/1.0\r\n\r\n", None).await;
        assert!(got.contains("no HTTP gateway (--http)"), "{got}");
    }

    #[tokio::test]
    async fn anything_else_is_not_http() {
        // A meshrpc frame's length prefix, and a TLS ClientHello's first bytes.
        for bytes in [&b"\0\0\0\x3fMRPC"[..], &[0x16, 0x03, 0x01, 0x02, 0x00][..]] {
            assert!(!exchange(bytes, None).await.0);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_dialer_is_greeted_after_the_window() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        assert!(!http_request(&server, SNIFF).await);
    }
}
