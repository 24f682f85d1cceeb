//! The acceptor's side of the handshake: greet (in the previous version's format, the
//! nonce marked with our newest version), read the dialer's hello in any version we speak,
//! check its cookie proof, and answer with the verdict in the hello's version.

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{bounded, wrong_port, HandshakeFailure, Local, Side, Socket};
use crate::link::auth::{self, CookieFailure, Role, Transcript};
use crate::wire::{self, Greeting, Hello, Verdict, Welcome};

/// A dialer's hello that passed the version and cookie checks.
pub(crate) struct Introduced {
    pub(crate) socket: Socket,
    pub(crate) hello: Hello,
    pub(crate) transcript: Transcript,
    /// The dialer is a plain client that proved the client secret (not the cookie): it is
    /// answered under the client secret.
    pub(crate) by_client_secret: bool,
}

/// Greets a new socket and reads the dialer's hello. A dialer that fails the cookie check is
/// refused here, with the reason, and never reaches admission.
pub(crate) async fn accept(
    stream: TcpStream,
    local: Local<'_>,
) -> Result<Introduced, HandshakeFailure> {
    // An HTTP client on this (plain) port speaks first: tell it where the gateway is. A
    // TLS port answers anything but a ClientHello with a TLS alert, which is how a plain
    // client's probe tells it uses TLS.
    if local.tls.is_none()
        && wrong_port::first(&stream, wrong_port::SNIFF).await == wrong_port::First::Http
    {
        wrong_port::answer(stream, &local.identity.name, local.gateway).await;
        let reason = "an HTTP request on the binary port (answered 400, naming the gateway)";
        return Err(HandshakeFailure::Failed(reason.to_owned()));
    }
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
        by_client_secret: false,
    };
    if let Err(reason) = introduced.socket.check_names(&introduced.hello.identity) {
        let ours = format!("refused {}: {reason}", introduced.hello.identity.name);
        let verdict = Verdict::Unauthenticated(format!("it refused this side: {reason}"));
        let _ = refuse(&mut introduced, local, verdict).await; // best effort
        return Err(HandshakeFailure::Unauthenticated(ours));
    }
    let proof = introduced.hello.proof;
    let them = &introduced.hello.identity;
    // The client secret lets a process call methods, never be a node.
    let client_proof = local
        .client_secret
        .zip(proof.as_ref())
        .is_some_and(|(secret, proof)| transcript.verify(secret, Role::Client, proof));
    if client_proof && them.listen.is_none() {
        introduced.by_client_secret = true;
        return Ok(introduced);
    }
    if client_proof {
        let ours = format!(
            "refused {}: it proved the client secret but announced a listen address, as a \
             node would (a client posing as a node)",
            them.name
        );
        let theirs = "the client secret lets a process call methods, never be a node: a node \
                      needs the cluster cookie";
        let verdict = Verdict::Unauthenticated(theirs.to_owned());
        let _ = refuse(&mut introduced, local, verdict).await; // best effort
        return Err(HandshakeFailure::Unauthenticated(ours));
    }
    if let Err(failure) = auth::check(local.cookie, &transcript, Role::Dialer, proof.as_ref()) {
        let them = &introduced.hello.identity.name;
        let wanted = match (
            local.client_secret,
            introduced.hello.identity.listen.is_none(),
        ) {
            (Some(_), true) => "the client secret (--client-secret or MESHRPC_CLIENT_SECRET)",
            _ => "the cluster cookie (--cookie or MESHRPC_COOKIE)",
        };
        // What the dialer is told, from its own point of view, and what we log, from ours.
        let (theirs, ours) = match failure {
            CookieFailure::Missing => (
                format!("it requires {wanted} and this side has none"),
                format!("refused {them}: it has no cookie and this node requires one"),
            ),
            CookieFailure::Mismatch => (
                format!("it refused this side's proof: it does not match {wanted}"),
                format!("refused {them}: its cookie is not this node's"),
            ),
        };
        let verdict = Verdict::Unauthenticated(theirs);
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
    let proof = if introduced.by_client_secret {
        let secret = local.client_secret;
        secret.map(|secret| introduced.transcript.prove(secret, Role::ClientAcceptor))
    } else {
        let cookie = local.cookie;
        cookie.map(|cookie| introduced.transcript.prove(cookie, Role::Acceptor))
    };
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::TcpListener;

    use super::*;
    use crate::wire::{Identity, NodeId};

    const COOKIE: &str = "the cluster cookie";
    const SECRET: &str = "the client secret, for callers";

    fn identity(id: u64, listen: Option<&str>) -> Identity {
        Identity {
            id: NodeId(id),
            name: format!("n{id}"),
            listen: listen.map(str::to_owned),
            max_frame: 1 << 20,
            incarnation: 1,
        }
    }

    fn local(identity: &Identity) -> Local<'_> {
        Local {
            identity,
            cookie: Some(COOKIE),
            client_secret: Some(SECRET),
            timeout: Duration::from_secs(5),
            tls: None,
            probe: false,
            versions: (wire::PREVIOUS_VERSION, wire::PROTOCOL_VERSION),
            gateway: None,
        }
    }

    /// A dialer that proves the client secret in a hello announcing `listen`: what the
    /// acceptor made of it, and the verdict the dialer read.
    async fn hello_with_client_proof(listen: Option<&str>) -> (Result<bool, String>, Verdict) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio::spawn(async move {
            let me = identity(1, Some("127.0.0.1:1"));
            let (stream, _) = listener.accept().await.unwrap();
            match accept(stream, local(&me)).await {
                Ok(introduced) => {
                    let welcome = welcome(local(&me), &introduced, Verdict::Accept).unwrap();
                    let mut socket = introduced.socket;
                    socket.write_raw(&welcome).await.unwrap();
                    Ok(introduced.by_client_secret)
                }
                Err(failure) => Err(failure.to_string()),
            }
        });
        let them = identity(2, listen);
        let stream = TcpStream::connect(addr).await.unwrap();
        let timeout = Duration::from_secs(5);
        let mut socket = Socket::open(stream, None, Side::Dialer, timeout)
            .await
            .unwrap();
        let versions = local(&them).versions;
        let (_, greeting) = socket.read::<Greeting>(versions).await.unwrap();
        let transcript = Transcript {
            acceptor_nonce: greeting.nonce,
            dialer_nonce: [7; 16],
            acceptor: greeting.identity.id,
            dialer: them.id,
        };
        let hello = Hello {
            identity: them.clone(),
            nonce: transcript.dialer_nonce,
            proof: Some(transcript.prove(SECRET, Role::Client)),
        };
        socket.write(&hello, wire::PROTOCOL_VERSION).await.unwrap();
        let (_, welcome) = socket.read::<Welcome>(versions).await.unwrap();
        (acceptor.await.unwrap(), welcome.verdict)
    }

    #[tokio::test]
    async fn the_client_secret_admits_a_plain_client() {
        let (accepted, verdict) = hello_with_client_proof(None).await;
        assert_eq!(accepted, Ok(true), "admitted as a client of the secret");
        assert_eq!(verdict, Verdict::Accept);
    }

    #[tokio::test]
    async fn a_client_secret_in_a_hello_that_announces_a_listen_address_is_refused() {
        let (accepted, verdict) = hello_with_client_proof(Some("127.0.0.1:9")).await;
        let refused = accepted.unwrap_err();
        assert!(refused.contains("client posing as a node"), "{refused}");
        let Verdict::Unauthenticated(why) = verdict else {
            panic!("{verdict:?}")
        };
        assert!(why.contains("never be a node"), "{why}");
    }
}
