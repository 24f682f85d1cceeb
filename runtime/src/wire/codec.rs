//! The byte format inside frames: bincode 2 in its standard configuration (little-endian,
//! variable-length integers) plus JSON for dynamic callers. This is the only file that names
//! bincode, so swapping the format touches nothing else.
//!
//! Decoding is bounded: bincode allocates containers from lengths it reads, so every decode runs
//! with [`DECODE_LIMIT`], and a length claiming more than that fails before any allocation.

use bincode::config::{self, Configuration, Limit, LittleEndian, Varint};
use bytes::{BufMut, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Encoding;

/// Upper bound on the bytes any single decode may claim for containers; also the largest
/// `max_frame` a node accepts, since nothing in a frame can legitimately claim more.
pub const DECODE_LIMIT: usize = 64 << 20;

type Cfg = Configuration<LittleEndian, Varint, Limit<DECODE_LIMIT>>;

const CFG: Cfg = config::standard().with_limit::<DECODE_LIMIT>();

/// A value could not be encoded or decoded; the message names what went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(pub String);

/// Appends the bincode encoding of `value` to `buf`.
///
/// # Errors
/// If `value`'s `Serialize` fails.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, buf: &mut BytesMut) -> Result<(), CodecError> {
    bincode::serde::encode_into_std_write(value, &mut buf.writer(), CFG)
        .map(|_| ())
        .map_err(|e| CodecError(e.to_string()))
}

/// Decodes one value from the front of `bytes`; returns it and how many bytes it used.
pub(crate) fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), CodecError> {
    bincode::serde::decode_from_slice(bytes, CFG).map_err(|e| CodecError(e.to_string()))
}

/// Decodes one value from the front of `bytes`, borrowing strings from it where the type
/// allows (`Cow<str>` with `#[serde(borrow)]`); returns it and how many bytes it used.
pub(crate) fn decode_borrowed<'a, T: serde::Deserialize<'a>>(
    bytes: &'a [u8],
) -> Result<(T, usize), CodecError> {
    bincode::serde::borrow_decode_from_slice(bytes, CFG).map_err(|e| CodecError(e.to_string()))
}

/// Decodes one value through `seed` (a type known only at run time) that must fill `bytes`
/// exactly.
pub(crate) fn decode_seed_exact<'a, S: serde::de::DeserializeSeed<'a>>(
    seed: S,
    bytes: &'a [u8],
) -> Result<S::Value, CodecError> {
    let (value, used) = bincode::serde::seed_decode_from_slice(seed, bytes, CFG)
        .map_err(|e| CodecError(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError(format!(
            "{} trailing bytes after the value",
            bytes.len() - used
        )));
    }
    Ok(value)
}

/// Decodes a value that must fill `bytes` exactly: trailing bytes are an error, because they
/// mean the sender and receiver disagree about the type.
///
/// # Errors
/// If the bytes do not decode as `T`, claim more than [`DECODE_LIMIT`], or have a tail.
pub fn decode_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) = decode_prefix(bytes)?;
    if used != bytes.len() {
        return Err(CodecError(format!(
            "{} trailing bytes after the value",
            bytes.len() - used
        )));
    }
    Ok(value)
}

/// Appends the JSON encoding of `value` to `buf`.
pub(crate) fn encode_json_into<T: Serialize + ?Sized>(
    value: &T,
    buf: &mut BytesMut,
) -> Result<(), CodecError> {
    serde_json::to_writer(buf.writer(), value).map_err(|e| CodecError(e.to_string()))
}

/// Decodes a JSON result value.
pub(crate) fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    serde_json::from_slice(bytes).map_err(|e| CodecError(e.to_string()))
}

/// Appends `value` to a frame body in `encoding`.
pub(crate) fn encode_body<T: Serialize + ?Sized>(
    encoding: Encoding,
    value: &T,
    buf: &mut BytesMut,
) -> Result<(), CodecError> {
    match encoding {
        Encoding::Bincode => encode_into(value, buf),
        Encoding::Json => encode_json_into(value, buf),
    }
}

/// Decodes a reply's result in `encoding`.
pub(crate) fn decode_result<T: DeserializeOwned>(
    encoding: Encoding,
    body: &[u8],
) -> Result<T, CodecError> {
    match encoding {
        Encoding::Bincode => decode_exact(body),
        Encoding::Json => decode_json(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_length_beyond_the_limit_fails_without_allocating() {
        // A one-byte-long frame claiming a string of u64::MAX/2 bytes.
        let mut buf = BytesMut::new();
        buf.put_u8(0xFD); // varint tag: u64 follows
        buf.put_u64_le(u64::MAX / 2);
        let err = decode_exact::<String>(&buf).unwrap_err();
        assert!(err.0.to_lowercase().contains("limit"), "{err}");
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut buf = BytesMut::new();
        encode_into(&7u32, &mut buf).unwrap();
        buf.put_u8(0);
        assert!(decode_exact::<u32>(&buf)
            .unwrap_err()
            .0
            .contains("trailing"));
    }
}
