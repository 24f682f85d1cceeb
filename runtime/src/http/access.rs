//! Who may use the gateway, and for what: the token check (HTTP Basic with the token as the
//! password, or `Authorization: Bearer TOKEN`), the throttle on wrong tokens (per source
//! address), and the method allowlist (`--http-methods` patterns, `*` matching any run of
//! characters).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use hyper::header::{HeaderMap, AUTHORIZATION};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::time::Instant;

/// See the module doc.
pub(crate) struct Access {
    /// SHA-256 of the token: candidates are hashed and compared in constant time, so neither
    /// the token's bytes nor its length leak through timing.
    token: Option<[u8; 32]>,
    patterns: Vec<String>,
}

impl Access {
    pub(crate) fn new(token: Option<&str>, patterns: &[String]) -> Self {
        Access {
            token: token.map(digest),
            patterns: patterns.to_vec(),
        }
    }

    /// Whether the request carries the token (always, when there is none to carry).
    pub(crate) fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.token else {
            return true;
        };
        let Some(presented) = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(credential)
        else {
            return false;
        };
        bool::from(digest(&presented).ct_eq(expected))
    }

    /// Whether the gateway serves `method`: every method when no pattern was given, and
    /// always the introspection methods XML-RPC clients expect (`system.listMethods`, whose
    /// answer the gateway filters, `system.methodHelp`, `system.methodSignature`).
    pub(crate) fn allows(&self, method: &str) -> bool {
        self.patterns.is_empty()
            || INTROSPECTION.contains(&method)
            || self.patterns.iter().any(|p| glob(p, method))
    }
}

/// Wrong tokens a source address may send in one [`WINDOW`]; past that it gets 429 until the
/// window ends, its candidates not even checked: guessing runs at 10 a second, not thousands.
pub(crate) const MAX_FAILURES: u32 = 10;
/// See [`MAX_FAILURES`].
pub(crate) const WINDOW: Duration = Duration::from_secs(1);
/// Sources remembered at once; beyond it the ones whose window is over are forgotten (and,
/// if that is not enough, all: a throttle is not worth unbounded memory).
const MAX_SOURCES: usize = 10_000;

/// Wrong tokens by source address, in the current window of each.
#[derive(Default)]
pub(crate) struct Throttle {
    sources: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Throttle {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (Instant, u32)>> {
        self.sources.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `source` has sent too many wrong tokens in its current window.
    pub(crate) fn throttled(&self, source: IpAddr) -> bool {
        let now = Instant::now();
        (self.lock().get(&source))
            .is_some_and(|(since, failures)| now < *since + WINDOW && *failures >= MAX_FAILURES)
    }

    /// `source` sent a wrong token.
    pub(crate) fn failed(&self, source: IpAddr) {
        let now = Instant::now();
        let mut sources = self.lock();
        if sources.len() >= MAX_SOURCES {
            sources.retain(|_, (since, _)| now < *since + WINDOW);
            if sources.len() >= MAX_SOURCES {
                sources.clear();
            }
        }
        let entry = sources.entry(source).or_insert((now, 0));
        if now >= entry.0 + WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }
}

/// Served whatever the allowlist says: they describe the methods, they run nothing.
const INTROSPECTION: [&str; 3] = [
    "system.listMethods",
    "system.methodHelp",
    "system.methodSignature",
];

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The secret in an `Authorization` value: a Basic password (any user name) or a Bearer
/// token. Scheme names are case-insensitive (RFC 9110).
fn credential(value: &str) -> Option<String> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.to_owned());
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest)
        .ok()?;
    let pair = String::from_utf8(decoded).ok()?;
    let (_user, password) = pair.split_once(':')?;
    Some(password.to_owned())
}

/// `*` matches any run of characters (none included); everything else matches itself.
fn glob(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else {
        return name.is_empty();
    };
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty(); // no `*` at all: an exact match
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    fn basic(user_pass: &str) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(user_pass);
        format!("Basic {b64}")
    }

    #[test]
    fn basic_with_any_user_and_bearer_carry_the_token() {
        let access = Access::new(Some("s3cret"), &[]);
        assert!(access.authorized(&headers(&basic("meshrpc:s3cret"))));
        assert!(access.authorized(&headers(&basic(":s3cret"))));
        assert!(access.authorized(&headers("Bearer s3cret")));
        assert!(access.authorized(&headers("bearer s3cret")));
        assert!(!access.authorized(&headers(&basic("meshrpc:wrong"))));
        assert!(!access.authorized(&headers(&basic("s3cret"))), "no colon");
        assert!(!access.authorized(&headers("Bearer s3cre")));
        assert!(!access.authorized(&headers("Digest s3cret")));
        assert!(!access.authorized(&HeaderMap::new()));
        assert!(Access::new(None, &[]).authorized(&HeaderMap::new()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_that_keeps_guessing_is_held_off_for_the_rest_of_its_window() {
        let throttle = Throttle::default();
        let (guesser, other): (IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..MAX_FAILURES {
            assert!(!throttle.throttled(guesser));
            throttle.failed(guesser);
        }
        assert!(throttle.throttled(guesser));
        assert!(!throttle.throttled(other), "per source");
        tokio::time::advance(WINDOW).await;
        assert!(!throttle.throttled(guesser), "a new window");
    }

    #[test]
    fn patterns_match_with_stars() {
        assert!(glob("add", "add"));
        assert!(!glob("add", "adder"));
        assert!(glob("counter.*", "counter.incr"));
        assert!(!glob("counter.*", "counter"));
        assert!(glob("*", "anything"));
        assert!(glob("*.get", "counter.get"));
        assert!(glob("a*b*c", "a--b--c"));
        assert!(!glob("a*b*c", "a--c--b"));
        let access = Access::new(None, &["add".into(), "counter.*".into()]);
        assert!(access.allows("add") && access.allows("counter.get"));
        assert!(!access.allows("fanout"));
        assert!(Access::new(None, &[]).allows("fanout"));
    }
}
