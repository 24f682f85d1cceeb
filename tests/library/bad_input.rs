//! Hostile and broken input on a raw socket: every case closes (or refuses) that one
//! connection with a specific reason, and the node keeps serving everyone else.

use std::time::Duration;

use meshrpc::wire::{
    self, Greeting, Hello, Identity, NodeId, Verdict, Welcome, MAGIC, PREVIOUS_VERSION,
    PROTOCOL_VERSION,
};
use meshrpc::{Client, ErrorKind, Node, NodeConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::net::TcpStream;

const PATIENCE: Duration = Duration::from_secs(20);

async fn node() -> Node {
    let config = NodeConfig {
        name: "target".into(),
        handshake_timeout: Duration::from_millis(300),
        ..NodeConfig::default()
    };
    let node = Node::start(config).await.unwrap();
    node.register("add", |(a, b): (i64, i64)| a + b);
    node
}

async fn still_serves(node: &Node) {
    let client = Client::connect(&node.addr().to_string()).await.unwrap();
    assert_eq!(client.peer().call::<i64>("add", (2, 3)).await.unwrap(), 5);
    client.close().await;
}

/// Reads until the node closes the connection; fails the test if it stays open.
async fn expect_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut seen)).await;
    match read {
        Err(_) => panic!("the node kept the connection open"),
        // A reset is a close too.
        Ok(Ok(_)) | Ok(Err(_)) => seen,
    }
}

fn client_hello() -> Hello {
    let identity = Identity {
        id: NodeId(1),
        name: "raw".into(),
        listen: None,
        max_frame: 1 << 20,
        incarnation: 0,
    };
    Hello {
        identity,
        nonce: [0; 16],
        proof: None,
    }
}

async fn read_frame(stream: &mut TcpStream) -> Vec<u8> {
    let len = stream.read_u32().await.unwrap() as usize;
    let mut payload = vec![0; len];
    stream.read_exact(&mut payload).await.unwrap();
    payload
}

/// Connects and reads the node's greeting.
async fn greeted(node: &Node) -> TcpStream {
    let mut stream = TcpStream::connect(node.addr()).await.unwrap();
    let greeting: Greeting = wire::decode_handshake(&read_frame(&mut stream).await).unwrap();
    assert_eq!(greeting.identity.name, "target");
    stream
}

/// Connects and completes the handshake by hand.
async fn handshaken(node: &Node) -> TcpStream {
    let mut stream = greeted(node).await;
    stream
        .write_all(&wire::encode_handshake(&client_hello()).unwrap())
        .await
        .unwrap();
    let welcome: Welcome = wire::decode_handshake(&read_frame(&mut stream).await).unwrap();
    assert_eq!(welcome.verdict, Verdict::Accept);
    stream
}

#[tokio::test]
async fn garbage_instead_of_a_handshake_is_dropped() {
    let node = node().await;
    let mut stream = greeted(&node).await;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(
        expect_closed(&mut stream).await.is_empty(),
        "no welcome for a non-meshrpc peer"
    );
    still_serves(&node).await;
    node.shutdown().await;
}

#[tokio::test]
async fn wrong_magic_is_dropped() {
    let node = node().await;
    let mut frame = wire::encode_handshake(&client_hello()).unwrap().to_vec();
    frame[4..8].copy_from_slice(b"HTTP");
    let mut stream = greeted(&node).await;
    stream.write_all(&frame).await.unwrap();
    assert!(expect_closed(&mut stream).await.is_empty());
    still_serves(&node).await;
    node.shutdown().await;
}

#[tokio::test]
async fn a_dialer_with_a_version_this_node_does_not_speak_is_dropped() {
    let node = node().await;
    // Two releases back, and one ahead.
    for version in [PREVIOUS_VERSION - 1, PROTOCOL_VERSION + 1] {
        let mut frame = wire::encode_handshake(&client_hello()).unwrap().to_vec();
        frame[8..10].copy_from_slice(&version.to_be_bytes());
        let mut stream = greeted(&node).await;
        stream.write_all(&frame).await.unwrap();
        assert!(
            expect_closed(&mut stream).await.is_empty(),
            "version {version}"
        );
    }
    still_serves(&node).await;
    node.shutdown().await;
}

#[tokio::test]
async fn an_acceptor_two_versions_apart_is_reported_as_such() {
    for version in [PREVIOUS_VERSION - 1, PROTOCOL_VERSION + 1] {
        acceptor_of_version(version).await;
    }
}

/// A fake node greeting in `version`, which this release does not speak.
async fn acceptor_of_version(version: u16) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let identity = Identity {
            id: NodeId(2),
            name: "future".into(),
            listen: None,
            max_frame: 1024,
            incarnation: 0,
        };
        let mut frame = wire::encode_handshake(&Greeting {
            identity,
            nonce: [0; 16],
        })
        .unwrap()
        .to_vec();
        frame[8..10].copy_from_slice(&version.to_be_bytes());
        stream.write_all(&frame).await.unwrap();
        expect_closed(&mut stream).await
    });
    let err = Client::connect(&addr.to_string())
        .await
        .err()
        .expect("the handshake fails");
    assert_eq!(err.kind(), ErrorKind::Protocol);
    let expected = format!(
        "version mismatch: peer speaks {version}, this node speaks {PREVIOUS_VERSION} to {PROTOCOL_VERSION}"
    );
    assert!(err.to_string().contains(&expected), "{err}");
    // The dialer still sent its own hello, so the other side can report the mismatch too.
    let sent = tokio::time::timeout(PATIENCE, fake).await.unwrap().unwrap();
    assert_eq!(&sent[4..8], &MAGIC);
    assert_eq!(u16::from_be_bytes([sent[8], sent[9]]), PROTOCOL_VERSION);
}

#[tokio::test]
async fn a_silent_or_half_handshake_is_dropped_after_the_timeout() {
    let node = node().await;
    let mut silent = greeted(&node).await;
    let mut half = greeted(&node).await;
    let hello = wire::encode_handshake(&client_hello()).unwrap();
    half.write_all(&hello[..hello.len() / 2]).await.unwrap();
    assert!(expect_closed(&mut silent).await.is_empty());
    assert!(expect_closed(&mut half).await.is_empty());
    still_serves(&node).await;
    node.shutdown().await;
}

#[tokio::test]
async fn an_oversized_length_closes_the_link_without_allocating() {
    let node = node().await;
    let mut stream = handshaken(&node).await;
    // Claims a 3 GiB frame; the node refuses from the 4-byte prefix alone.
    stream
        .write_all(&0xC000_0000u32.to_be_bytes())
        .await
        .unwrap();
    expect_closed(&mut stream).await;
    still_serves(&node).await;
    node.shutdown().await;
}

#[tokio::test]
async fn a_truncated_frame_closes_the_link() {
    let node = node().await;
    let mut stream = handshaken(&node).await;
    stream.write_all(&100u32.to_be_bytes()).await.unwrap();
    stream.write_all(&[0u8; 10]).await.unwrap();
    stream.shutdown().await.unwrap();
    expect_closed(&mut stream).await;
    still_serves(&node).await;
    node.shutdown().await;
}

#[tokio::test]
async fn an_undecodable_frame_closes_the_link() {
    let node = node().await;
    let mut stream = handshaken(&node).await;
    let garbage = [0xFFu8; 32];
    stream
        .write_all(&(garbage.len() as u32).to_be_bytes())
        .await
        .unwrap();
    stream.write_all(&garbage).await.unwrap();
    expect_closed(&mut stream).await;
    still_serves(&node).await;
    node.shutdown().await;
}

/// One whole frame: `header` and no body.
fn frame(header: &wire::Header<'_>) -> Vec<u8> {
    let mut buf = bytes::BytesMut::new();
    wire::FrameBuf::new(&mut buf, header)
        .unwrap()
        .finish(1 << 20)
        .unwrap();
    buf.to_vec()
}

#[tokio::test]
async fn uploaded_items_nobody_granted_close_the_link_instead_of_piling_up() {
    let node = node().await;
    // A server stream: it reads no upload, so it grants the caller no credit for one.
    node.register_stream("quiet", |(): ()| futures_util::stream::pending::<u64>());
    let mut stream = handshaken(&node).await;
    let open = wire::Header::StreamOpen {
        id: 1,
        method: "quiet".into(),
        timeout_ms: None,
        encoding: wire::Encoding::Bincode,
        signature: None,
        credit: 1,
        trace: None,
    };
    stream.write_all(&frame(&open)).await.unwrap();
    // Items it never asked for: the first is already a violation.
    let item = frame(&wire::Header::StreamItem {
        id: 1,
        from_caller: true,
    });
    // Then a plain call: a node that took the items would answer it.
    let mut call = bytes::BytesMut::new();
    let request = wire::Header::Request {
        id: 2,
        method: "add".into(),
        timeout_ms: None,
        encoding: wire::Encoding::Bincode,
        signature: None,
        trace: None,
    };
    let mut framed = wire::FrameBuf::new(&mut call, &request).unwrap();
    wire::encode_value(&(2i64, 3i64), framed.body_mut()).unwrap();
    framed.finish(1 << 20).unwrap();
    let mut sent = [item.clone(), item, call.to_vec()].concat();
    if stream.write_all(&sent).await.is_err() {
        sent.clear(); // already closed
    }
    let seen = expect_closed(&mut stream).await;
    let mut rest = &seen[..];
    while rest.len() >= 4 {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let Some(payload) = rest.get(4..4 + len) else {
            break;
        };
        let payload = bytes::Bytes::copy_from_slice(payload);
        if let Ok((header, _)) = wire::decode_frame(&payload) {
            assert!(
                !matches!(header, wire::Header::Response { .. }),
                "the link kept serving after the violation: {header:?}"
            );
        }
        rest = &rest[4 + len..];
    }
    still_serves(&node).await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_stops_sending_is_still_closed_when_the_node_stops() {
    // A link's reader takes buffered frames before it looks at the link's token, so a
    // peer whose frames never run dry must not keep its link (and the socket) alive past
    // the node's shutdown: tokio's read budget makes the reader look.
    let node = node().await;
    let (mut read, mut write) = handshaken(&node).await.into_split();
    // The node's pongs are read and dropped, so it never pauses reading for backpressure.
    let drain = tokio::spawn(async move {
        let mut sink = vec![0u8; 64 << 10];
        while matches!(read.read(&mut sink).await, Ok(n) if n > 0) {}
    });
    let pings: Vec<u8> = (0..1000).flat_map(|_| frame(&wire::Header::Ping)).collect();
    let (flooding_tx, flooding) = tokio::sync::oneshot::channel();
    let flood = tokio::spawn(async move {
        let mut flooding_tx = Some(flooding_tx);
        // Bounded: past this the flood gives up and the test fails below, saying why.
        let give_up = tokio::time::Instant::now() + PATIENCE;
        while tokio::time::Instant::now() < give_up {
            if write.write_all(&pings).await.is_err() {
                return true; // the node closed the socket
            }
            if let Some(tx) = flooding_tx.take() {
                let _ = tx.send(());
            }
        }
        false
    });
    flooding.await.expect("the flood started");
    tokio::time::timeout(PATIENCE, node.shutdown())
        .await
        .expect("the node stops under a flood");
    let closed = tokio::time::timeout(PATIENCE * 2, flood)
        .await
        .expect("the flood ends")
        .unwrap();
    assert!(closed, "the node kept reading the flood after it stopped");
    drain.abort();
}
