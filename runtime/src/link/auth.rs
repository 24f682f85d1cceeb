//! The cluster cookie: a shared secret both ends of a link prove they know, without sending
//! it, by an HMAC-SHA256 over the handshake's two nonces and two ids. Each side's proof is
//! bound to its role, so a proof cannot be reflected back. The client secret is proved the
//! same way under roles of its own, so a client's proof never passes for a node's. Pure
//! functions; no IO.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::wire::{NodeId, Nonce, Proof};

type HmacSha256 = Hmac<Sha256>;

/// Which end of the link a proof comes from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Role {
    /// A node (or a client holding the cookie) dialing, under the cookie.
    Dialer,
    /// The acceptor answering a cookie proof.
    Acceptor,
    /// A plain client dialing, under the client secret.
    Client,
    /// The acceptor answering a client-secret proof.
    ClientAcceptor,
}

/// What a proof covers: both nonces and both ids of one handshake.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Transcript {
    pub(crate) acceptor_nonce: Nonce,
    pub(crate) dialer_nonce: Nonce,
    pub(crate) acceptor: NodeId,
    pub(crate) dialer: NodeId,
}

impl Transcript {
    fn mac(&self, cookie: &str, role: Role) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac =
            HmacSha256::new_from_slice(cookie.as_bytes()).unwrap_or_else(|_| unreachable!());
        let tag: &[u8] = match role {
            Role::Dialer => b"meshrpc v1 dialer",
            Role::Acceptor => b"meshrpc v1 acceptor",
            Role::Client => b"meshrpc v1 client",
            Role::ClientAcceptor => b"meshrpc v1 client acceptor",
        };
        mac.update(tag);
        mac.update(&self.acceptor_nonce);
        mac.update(&self.dialer_nonce);
        mac.update(&self.acceptor.0.to_be_bytes());
        mac.update(&self.dialer.0.to_be_bytes());
        mac
    }

    /// The proof `role` sends.
    pub(crate) fn prove(&self, cookie: &str, role: Role) -> Proof {
        self.mac(cookie, role).finalize().into_bytes().into()
    }

    /// Checks the other side's proof in constant time.
    pub(crate) fn verify(&self, cookie: &str, role: Role, proof: &Proof) -> bool {
        self.mac(cookie, role).verify_slice(proof).is_ok()
    }
}

/// Why the other side's cookie proof was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CookieFailure {
    /// This side has a cookie and the other sent no proof (it has none).
    Missing,
    /// The proof does not verify: the other side knows another cookie.
    Mismatch,
}

/// Checks the proof `their_role` sent against our own cookie setting.
pub(crate) fn check(
    cookie: Option<&str>,
    transcript: &Transcript,
    their_role: Role,
    proof: Option<&Proof>,
) -> Result<(), CookieFailure> {
    match (cookie, proof) {
        (None, _) => Ok(()),
        (Some(_), None) => Err(CookieFailure::Missing),
        (Some(cookie), Some(proof)) if transcript.verify(cookie, their_role, proof) => Ok(()),
        (Some(_), Some(_)) => Err(CookieFailure::Mismatch),
    }
}

/// What a MAC outside a handshake is for: the tag keeps one kind from passing as another.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Sealed {
    /// A multicast beacon.
    Beacon,
    /// A membership datagram.
    Datagram,
}

/// A MAC of `data` under the cookie, for messages outside a handshake.
pub(crate) fn seal(cookie: &str, kind: Sealed, data: &[u8]) -> Proof {
    sealed_mac(cookie, kind, data)
        .finalize()
        .into_bytes()
        .into()
}

/// Checks [`seal`]'s MAC in constant time.
pub(crate) fn verify_seal(cookie: &str, kind: Sealed, data: &[u8], proof: &[u8]) -> bool {
    sealed_mac(cookie, kind, data).verify_slice(proof).is_ok()
}

fn sealed_mac(cookie: &str, kind: Sealed, data: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(cookie.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(match kind {
        Sealed::Beacon => b"meshrpc v1 beacon".as_slice(),
        Sealed::Datagram => b"meshrpc v2 membership".as_slice(),
    });
    mac.update(data);
    mac
}

pub(crate) fn nonce() -> Nonce {
    rand::random()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript() -> Transcript {
        Transcript {
            acceptor_nonce: [1; 16],
            dialer_nonce: [2; 16],
            acceptor: NodeId(3),
            dialer: NodeId(4),
        }
    }

    #[test]
    fn a_proof_verifies_only_with_the_same_cookie_role_and_transcript() {
        let t = transcript();
        let proof = t.prove("secret", Role::Dialer);
        assert!(t.verify("secret", Role::Dialer, &proof));
        assert!(!t.verify("other", Role::Dialer, &proof));
        assert!(!t.verify("secret", Role::Acceptor, &proof), "no reflection");
        let client = t.prove("secret", Role::Client);
        assert!(t.verify("secret", Role::Client, &client));
        assert!(
            !t.verify("secret", Role::Dialer, &client),
            "a client's proof never passes for a node's, even under the same secret"
        );
        let replayed = Transcript {
            acceptor_nonce: [9; 16],
            ..t
        };
        assert!(
            !replayed.verify("secret", Role::Dialer, &proof),
            "no replay with a new nonce"
        );
    }

    #[test]
    fn check_names_what_is_wrong() {
        let t = transcript();
        let good = t.prove("s", Role::Acceptor);
        assert!(check(None, &t, Role::Acceptor, None).is_ok());
        assert!(check(Some("s"), &t, Role::Acceptor, Some(&good)).is_ok());
        assert_eq!(
            check(Some("s"), &t, Role::Acceptor, None),
            Err(CookieFailure::Missing)
        );
        assert_eq!(
            check(Some("x"), &t, Role::Acceptor, Some(&good)),
            Err(CookieFailure::Mismatch)
        );
    }
}
