//! Opening links: TCP connect and accept, and the handshake that comes first on every link.
//!
//! The dialer sends a `Hello`; the acceptor checks magic and version, decides (see
//! [`crate::peers`]) and answers with a `HelloReply` carrying its own hello and the verdict.
//! Both steps are bounded by the handshake timeout. What this module returns is a socket
//! ready for [`crate::connection::Connection::start`]; registration is the caller's business.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

use crate::wire::{self, Hello, HelloReply, NodeId, Verdict};
use crate::{PeerInfo, RpcError};

/// Handshake frames are small; a larger one is refused before it is read.
const MAX_HANDSHAKE_FRAME: usize = 16 << 10;

pub(crate) type Reader = FramedRead<OwnedReadHalf, LengthDelimitedCodec>;

/// A connected socket, split, with the reader framing already in place.
pub(crate) struct Socket {
    pub(crate) reader: Reader,
    pub(crate) writer: OwnedWriteHalf,
    pub(crate) remote: SocketAddr,
}

impl Socket {
    pub(crate) fn new(stream: TcpStream) -> std::io::Result<Self> {
        // Frames are written whole by a writer that batches them itself.
        stream.set_nodelay(true)?;
        let remote = stream.peer_addr()?;
        let (read, writer) = stream.into_split();
        let reader = LengthDelimitedCodec::builder()
            .length_field_length(4)
            .big_endian()
            .max_frame_length(MAX_HANDSHAKE_FRAME)
            .new_read(read);
        Ok(Socket {
            reader,
            writer,
            remote,
        })
    }

    async fn read_handshake<T: serde::de::DeserializeOwned>(&mut self) -> Result<T, String> {
        match self.reader.next().await {
            None => Err("the peer closed the connection during the handshake".to_owned()),
            Some(Err(e)) => Err(format!("handshake read failed: {e}")),
            Some(Ok(payload)) => wire::decode_handshake(&payload).map_err(|e| e.to_string()),
        }
    }

    async fn write_raw(&mut self, frame: &Bytes) -> Result<(), String> {
        self.writer
            .write_all(frame)
            .await
            .map_err(|e| format!("handshake write failed: {e}"))
    }
}

/// Who the other end of a link is, from its hello.
pub(crate) fn peer_info(hello: &Hello, remote: SocketAddr) -> PeerInfo {
    PeerInfo {
        id: hello.id,
        name: hello.name.clone(),
        addr: hello.listen.as_deref().and_then(|a| a.parse().ok()),
        remote,
    }
}

/// What a successful dial learned.
pub(crate) enum Dialed {
    /// The acceptor kept this link.
    Accepted(Box<Socket>, Hello),
    /// The acceptor has (or is completing) another link to us with this peer id: use that one.
    Duplicate(NodeId),
}

/// Connects to `addr` and runs the dialer's side of the handshake.
pub(crate) async fn dial(
    addr: SocketAddr,
    hello: &Hello,
    connect_timeout: Duration,
    handshake_timeout: Duration,
) -> Result<Dialed, RpcError> {
    let unavailable = |reason: String| RpcError::PeerUnavailable {
        peer: addr.to_string(),
        reason,
    };
    let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
        Err(_) => {
            return Err(unavailable(format!(
                "no connection within {connect_timeout:?}"
            )))
        }
        Ok(Err(e)) => return Err(unavailable(e.to_string())),
        Ok(Ok(stream)) => stream,
    };
    let mut socket = Socket::new(stream).map_err(|e| unavailable(e.to_string()))?;
    let exchange = async {
        let frame = wire::encode_handshake(hello).map_err(|e| e.to_string())?;
        socket.write_raw(&frame).await?;
        socket.read_handshake::<HelloReply>().await
    };
    let reply = match tokio::time::timeout(handshake_timeout, exchange).await {
        Err(_) => {
            return Err(unavailable(format!(
                "no handshake reply within {handshake_timeout:?}"
            )))
        }
        Ok(Err(reason)) => return Err(RpcError::Protocol(format!("{addr}: {reason}"))),
        Ok(Ok(reply)) => reply,
    };
    match reply.verdict {
        Verdict::Accept => Ok(Dialed::Accepted(Box::new(socket), reply.hello)),
        Verdict::Duplicate => Ok(Dialed::Duplicate(reply.hello.id)),
        Verdict::Refuse(reason) => Err(unavailable(format!(
            "refused by {}: {reason}",
            reply.hello.name
        ))),
    }
}

/// Reads the dialer's hello on an accepted socket. A version mismatch is answered with a
/// refusal (in our version, so the dialer reports the mismatch too) before it is returned.
pub(crate) async fn accept(
    stream: TcpStream,
    ours: &Hello,
    timeout: Duration,
) -> Result<(Socket, Hello), String> {
    let mut socket = Socket::new(stream).map_err(|e| e.to_string())?;
    let read = tokio::time::timeout(timeout, socket.read_handshake::<Hello>()).await;
    match read {
        Err(_) => Err(format!("no handshake within {timeout:?}")),
        Ok(Ok(hello)) => Ok((socket, hello)),
        Ok(Err(reason)) => {
            if reason.contains("version mismatch") {
                let _ = refuse(&mut socket, ours, Verdict::Refuse(reason.clone())).await;
                // best effort
            }
            Err(reason)
        }
    }
}

/// Answers a hello with a verdict other than `Accept` and closes the socket.
pub(crate) async fn refuse(
    socket: &mut Socket,
    ours: &Hello,
    verdict: Verdict,
) -> Result<(), String> {
    let frame = reply_frame(ours, verdict)?;
    socket.write_raw(&frame).await?;
    let _ = socket.writer.shutdown().await; // the peer may already be gone
    Ok(())
}

/// The bytes of a handshake reply.
pub(crate) fn reply_frame(ours: &Hello, verdict: Verdict) -> Result<Bytes, String> {
    wire::encode_handshake(&HelloReply {
        hello: ours.clone(),
        verdict,
    })
    .map_err(|e| e.to_string())
}
