//! W3C trace context: the `traceparent` a call carries from an HTTP caller through the
//! gateway to every node it reaches (`00-TRACEID-PARENTID-FLAGS`, lowercase hex). On the
//! wire it travels as its bytes (see docs/PROTOCOL.md); this module parses and prints the
//! text form. No IO.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The trace a call belongs to and the span that made it (W3C `traceparent`, version 00).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Trace {
    /// The whole trace's id; never all zeros.
    pub trace_id: [u8; 16],
    /// The id of the span that made the call (the callee's parent); never all zeros.
    pub span_id: [u8; 8],
    /// Trace flags; bit 0 is `sampled`.
    pub flags: u8,
}

impl Trace {
    /// A new trace, sampled, with a random id and a random first span.
    pub fn random() -> Self {
        Trace {
            trace_id: nonzero(rand::random()),
            span_id: nonzero(rand::random()),
            flags: 1,
        }
    }

    /// A span of the same trace whose parent is this one.
    pub fn child(&self) -> Self {
        Trace {
            span_id: nonzero(rand::random()),
            ..*self
        }
    }

    /// Parses a `traceparent` header: `None` when it is not a valid one (then a callee
    /// starts no trace from it, as the W3C specification says).
    pub fn parse(traceparent: &str) -> Option<Self> {
        let text = traceparent.trim();
        let mut parts = text.split('-');
        let (version, trace_id, span_id, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let version = hex::<1>(version)?[0];
        // Version ff is invalid; 00 has exactly four fields; later ones may add more.
        if version == 0xff || (version == 0 && parts.next().is_some()) {
            return None;
        }
        let trace = Trace {
            trace_id: hex::<16>(trace_id)?,
            span_id: hex::<8>(span_id)?,
            flags: hex::<1>(flags)?[0],
        };
        let zero = trace.trace_id == [0; 16] || trace.span_id == [0; 8];
        (!zero).then_some(trace)
    }
}

/// `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`.
impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("00-")?;
        self.trace_id
            .iter()
            .try_for_each(|b| write!(f, "{b:02x}"))?;
        f.write_str("-")?;
        self.span_id.iter().try_for_each(|b| write!(f, "{b:02x}"))?;
        write!(f, "-{:02x}", self.flags)
    }
}

impl fmt::Debug for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Trace({self})")
    }
}

/// Exactly `N` bytes of lowercase hex.
fn hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in text.as_bytes().chunks(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

fn nonzero<const N: usize>(mut bytes: [u8; N]) -> [u8; N] {
    if bytes == [0; N] {
        bytes[N - 1] = 1;
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_w3c_example_round_trips() {
        let trace = Trace::parse(EXAMPLE).expect("valid");
        assert_eq!(trace.trace_id[0], 0x4b);
        assert_eq!(trace.span_id[7], 0xb7);
        assert_eq!(trace.flags, 1);
        assert_eq!(trace.to_string(), EXAMPLE);
        let child = trace.child();
        assert_eq!(child.trace_id, trace.trace_id);
        assert_ne!(child.span_id, trace.span_id);
    }

    #[test]
    fn invalid_headers_start_no_trace() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(Trace::parse(bad), None, "{bad:?}");
        }
        // A later version may carry more fields.
        assert!(Trace::parse(&format!("01{}-later", &EXAMPLE[2..])).is_some());
    }
}
