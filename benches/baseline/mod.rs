//! The baseline the benches compare meshrpc with, measured in the same run: a minimal
//! pipelined echo over the same stack (tokio, tokio-util length-delimited frames, a bincode
//! request with an id; no actors, no registry, no handshake): the practical ceiling of this
//! design. Its client has a writer task, a reader task and a pending table, like any
//! pipelined client; its server echoes every frame, flushing only when none is ready.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

const BINCODE: bincode::config::Configuration = bincode::config::standard();

/// The baseline's request and reply: an id and a body.
#[derive(Serialize, Deserialize)]
struct Msg {
    id: u64,
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
}

/// Baseline client: a writer task, a reader task and a pending table, like any pipelined client.
#[derive(Clone)]
pub struct Baseline {
    out: mpsc::UnboundedSender<Bytes>,
    pending: Arc<DashMap<u64, oneshot::Sender<Vec<u8>>>>,
    next: Arc<AtomicU64>,
}

impl Baseline {
    /// Starts an echo server listening on `addr` (`127.0.0.1:0`: a port of its own), each
    /// connection in its own task; returns the address it listens on.
    pub async fn server(addr: &str) -> SocketAddr {
        let listener = TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(echo_server(stream));
            }
        });
        addr
    }

    /// Opens one pipelined connection to the server at `addr`.
    pub async fn connect(addr: SocketAddr) -> Baseline {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let (read, write) = stream.into_split();
        let (out, mut rx) = mpsc::unbounded_channel::<Bytes>();
        let pending: Arc<DashMap<u64, oneshot::Sender<Vec<u8>>>> = Arc::default();
        tokio::spawn(async move {
            let mut sink = FramedWrite::new(write, LengthDelimitedCodec::new());
            while let Some(frame) = rx.recv().await {
                let _ = sink.feed(frame).await;
                while let Ok(frame) = rx.try_recv() {
                    let _ = sink.feed(frame).await;
                }
                let _ = SinkExt::<Bytes>::flush(&mut sink).await;
            }
        });
        let routes = pending.clone();
        tokio::spawn(async move {
            let mut frames = FramedRead::new(read, LengthDelimitedCodec::new());
            while let Some(Ok(frame)) = frames.next().await {
                if let Ok((msg, _)) = bincode::serde::decode_from_slice::<Msg, _>(&frame, BINCODE) {
                    if let Some((_, tx)) = routes.remove(&msg.id) {
                        let _ = tx.send(msg.body);
                    }
                }
            }
        });
        Baseline {
            out,
            pending,
            next: Arc::default(),
        }
    }

    /// One round trip carrying `body`.
    pub async fn call(&self, body: &[u8]) -> Vec<u8> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.insert(id, tx);
        let msg = Msg {
            id,
            body: body.to_vec(),
        };
        let bytes = bincode::serde::encode_to_vec(&msg, BINCODE).expect("encode");
        self.out.send(Bytes::from(bytes)).expect("writer alive");
        rx.await.expect("reply")
    }
}

/// Echoes every frame, flushing only when no other frame is ready.
async fn echo_server(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let mut frames = FramedRead::new(read, LengthDelimitedCodec::new());
    let mut sink = FramedWrite::new(write, LengthDelimitedCodec::new());
    while let Some(Ok(frame)) = frames.next().await {
        let mut next = Some(frame);
        while let Some(frame) = next.take() {
            let reply: BytesMut = frame; // same id, same body: an echo
            if sink.feed(reply.freeze()).await.is_err() {
                return;
            }
            if let Some(Some(Ok(more))) = frames.next().now_or_never() {
                next = Some(more);
            }
        }
        if SinkExt::<Bytes>::flush(&mut sink).await.is_err() {
            return;
        }
    }
}
