//! The acceptor's side of the handshake: greet (in the previous version's format, the
//! nonce marked with our newest version), read the dialer's hello in any version we speak,
//! check its cookie proof, and answer with the verdict in the hello's version.

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{bounded, HandshakeFailure, Local, Side, Socket};
use crate::link::auth::{self, CookieFailure, Role, Transcript};
use crate::wire::{self, Greeting, Hello, Verdict, Welcome};

/// A dialer's hello that passed the version and cookie checks.
pub(crate) struct Introduced {
    pub(crate) socket: Socket,
    pub(crate) hello: Hello,
    pub(crate) transcript: Transcript,
}

/// Greets a new socket and reads the dialer's hello. A dialer that fails the cookie check is
/// refused here, with the reason, and never reaches admission.
pub(crate) async fn accept(
    stream: TcpStream,
    local: Local<'_>,
) -> Result<Introduced, HandshakeFailure> {
    let mut socket = Socket::open(stream, local.tls, Side::Acceptor, local.timeout).await?;
    let (lowest, highest) = local.versions;
    let mut nonce = auth::nonce();
    if highest > lowest {
        wire::mark_nonce(&mut nonce, highest);
    }
    let greeting = Greeting {
        identity: local.identity.clone(),
        nonce,
    };
    // In the previous version's format, which dialers of the release before read.
    let greeting_version = highest.saturating_sub(1).max(lowest);
    let exchange = async {
        socket.write(&greeting, greeting_version).await?;
        socket.read::<Hello>(local.versions).await
    };
    let (version, hello) = bounded(local.timeout, exchange).await?;
    socket.version = version;
    let transcript = Transcript {
        acceptor_nonce: greeting.nonce,
        dialer_nonce: hello.nonce,
        acceptor: local.identity.id,
        dialer: hello.identity.id,
    };
    let mut introduced = Introduced {
        socket,
        hello,
        transcript,
    };
    let proof = introduced.hello.proof;
    if let Err(failure) = auth::check(local.cookie, &transcript, Role::Dialer, proof.as_ref()) {
        let them = &introduced.hello.identity.name;
        // What the dialer is told, from its own point of view, and what we log, from ours.
        let (theirs, ours) = match failure {
            CookieFailure::Missing => (
                "it requires the cluster cookie and this side has none (--cookie or MESHRPC_COOKIE)",
                format!("refused {them}: it has no cookie and this node requires one"),
            ),
            CookieFailure::Mismatch => (
                "it refused this side's cookie: the two cookies differ",
                format!("refused {them}: its cookie is not this node's"),
            ),
        };
        let verdict = Verdict::Unauthenticated(theirs.to_owned());
        let _ = refuse(&mut introduced, local, verdict).await; // best effort
        return Err(HandshakeFailure::Unauthenticated(ours));
    }
    Ok(introduced)
}

/// The bytes of our `Welcome` with `verdict`, with our cookie proof, in the version the
/// dialer's hello chose.
pub(crate) fn welcome(
    local: Local<'_>,
    introduced: &Introduced,
    verdict: Verdict,
) -> Result<Bytes, String> {
    let proof = local
        .cookie
        .map(|cookie| introduced.transcript.prove(cookie, Role::Acceptor));
    wire::encode_handshake_at(&Welcome { verdict, proof }, introduced.socket.version)
        .map_err(|e| e.to_string())
}

/// Answers with a verdict other than `Accept` and closes the socket.
pub(crate) async fn refuse(
    introduced: &mut Introduced,
    local: Local<'_>,
    verdict: Verdict,
) -> Result<(), String> {
    let frame = welcome(local, introduced, verdict)?;
    let socket = &mut introduced.socket;
    socket.write_raw(&frame).await.map_err(|e| e.to_string())?;
    let _ = socket.writer.shutdown().await; // the peer may already be gone
    Ok(())
}
