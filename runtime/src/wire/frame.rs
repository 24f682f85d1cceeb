//! Building and splitting frame payloads: the header/body layout and the handshake layout.
//! The 4-byte length prefix is written here for outgoing frames (so the writer only copies
//! bytes) and stripped by tokio-util's length-delimited decoder for incoming ones.

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::codec::{self, CodecError};
use super::{Encoding, Header, MAGIC, PREVIOUS_VERSION, PROTOCOL_VERSION};

/// An outgoing frame being appended to a buffer that may already hold other frames: length
/// placeholder, then header, then body. Unless [`FrameBuf::finish`] succeeds, dropping it
/// (an error, or a panic in user `Serialize` code) cuts the buffer back to where the frame
/// started, so a buffer never holds half a frame.
pub struct FrameBuf<'a> {
    buf: &'a mut BytesMut,
    start: usize,
    done: bool,
}

impl<'a> FrameBuf<'a> {
    /// Starts a frame with `header` at the end of `buf`; append the body through
    /// [`FrameBuf::body_mut`].
    ///
    /// # Errors
    /// If the header cannot be encoded (the buffer is left as it was).
    pub fn new(buf: &'a mut BytesMut, header: &Header<'_>) -> Result<Self, CodecError> {
        let start = buf.len();
        buf.put_u32(0);
        let frame = FrameBuf {
            buf,
            start,
            done: false,
        };
        codec::encode_into(header, frame.buf)?;
        Ok(frame)
    }

    /// The buffer the body is appended to.
    pub fn body_mut(&mut self) -> &mut BytesMut {
        self.buf
    }

    /// Writes the length prefix; if the payload exceeds `max_frame`, removes the frame and
    /// returns its size instead (nothing is sent then).
    ///
    /// # Errors
    /// The payload's size, when it is over `max_frame`.
    pub fn finish(mut self, max_frame: usize) -> Result<(), usize> {
        // The buffer only ever grows under a frame, but it is the caller's: do not trust it.
        let Some(len) = self.buf.len().checked_sub(self.start + 4) else {
            return Err(0);
        };
        if len > max_frame || len > u32::MAX as usize {
            return Err(len);
        }
        self.buf[self.start..self.start + 4].copy_from_slice(&(len as u32).to_be_bytes());
        self.done = true;
        Ok(())
    }
}

impl Drop for FrameBuf<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.buf.truncate(self.start);
        }
    }
}

/// Why [`append_frame`] added nothing.
#[derive(Debug)]
pub(crate) enum FrameError {
    /// The header or the body did not encode.
    Encode(CodecError),
    /// The frame would take this many bytes, over the limit.
    TooLarge(usize),
}

/// Appends one whole frame, `header` then `value` in `encoding`, to `buf`; on failure `buf`
/// is left as it was. The shape of every request and every successful response.
pub(crate) fn append_frame<T: Serialize + ?Sized>(
    buf: &mut BytesMut,
    header: &Header<'_>,
    encoding: Encoding,
    value: &T,
    max_frame: usize,
) -> Result<(), FrameError> {
    let mut frame = FrameBuf::new(buf, header).map_err(FrameError::Encode)?;
    codec::encode_body(encoding, value, frame.body_mut()).map_err(FrameError::Encode)?;
    frame.finish(max_frame).map_err(FrameError::TooLarge)
}

/// Appends one whole frame, `header` then a body already encoded (a forwarded call or
/// reply); on failure `buf` is left as it was.
pub(crate) fn append_frame_raw(
    buf: &mut BytesMut,
    header: &Header<'_>,
    body: &[u8],
    max_frame: usize,
) -> Result<(), FrameError> {
    let mut frame = FrameBuf::new(buf, header).map_err(FrameError::Encode)?;
    frame.body_mut().extend_from_slice(body);
    frame.finish(max_frame).map_err(FrameError::TooLarge)
}

/// Appends a frame with no body (control frames, error responses); `false` if it does not
/// fit in `max_frame` or its header does not encode, and then `buf` is left as it was.
pub(crate) fn append_header(buf: &mut BytesMut, header: &Header<'_>, max_frame: usize) -> bool {
    FrameBuf::new(buf, header)
        .ok()
        .is_some_and(|frame| frame.finish(max_frame).is_ok())
}

/// One whole frame for `header` with an empty body (control frames, tests).
pub(crate) fn frame_bytes(header: &Header<'_>) -> Result<Bytes, CodecError> {
    let mut buf = BytesMut::new();
    FrameBuf::new(&mut buf, header)?
        .finish(usize::MAX)
        .map_err(|n| CodecError(format!("{n} bytes")))?;
    Ok(buf.freeze())
}

/// Splits an incoming payload (length prefix already removed) into header and body.
/// The header borrows from `payload` (the method name is not copied); the body is a
/// zero-copy slice of it.
///
/// # Errors
/// If the header does not decode.
pub fn decode_frame(payload: &Bytes) -> Result<(Header<'_>, Bytes), CodecError> {
    let (header, used) = codec::decode_borrowed::<Header<'_>>(payload)?;
    Ok((header, payload.slice(used..)))
}

/// Why a handshake frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The frame does not start with [`MAGIC`]: not a meshrpc peer.
    #[error("not a meshrpc peer: bad magic {0:02x?}")]
    BadMagic(Vec<u8>),
    /// The peer speaks a protocol version this build does not.
    #[error("protocol version mismatch: peer speaks {peer}, this node speaks {}", Speaks(*.lowest, *.highest))]
    Version {
        /// The peer's version.
        peer: u16,
        /// The oldest version this side speaks.
        lowest: u16,
        /// The newest version this side speaks.
        highest: u16,
    },
    /// The frame is too short or its body does not decode.
    #[error("malformed handshake: {0}")]
    Malformed(String),
}

/// `3`, or `3 and 4`: the versions a side speaks, for messages.
pub(crate) struct Speaks(pub(crate) u16, pub(crate) u16);

impl std::fmt::Display for Speaks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Speaks(lowest, highest) if lowest == highest => write!(f, "{highest}"),
            Speaks(lowest, highest) => write!(f, "{lowest} to {highest}"),
        }
    }
}

/// A handshake frame in this build's newest version ([`PROTOCOL_VERSION`]), with its
/// length prefix: `MAGIC`, version (u16 BE), bincode(`msg`).
///
/// # Errors
/// If `msg` cannot be encoded.
pub fn encode_handshake<T: Serialize>(msg: &T) -> Result<Bytes, CodecError> {
    encode_handshake_at(msg, PROTOCOL_VERSION)
}

/// A handshake frame in `version`, with its length prefix. The messages' layout is the same
/// in versions 3 and 4; only the number differs.
///
/// # Errors
/// If `msg` cannot be encoded.
pub fn encode_handshake_at<T: Serialize>(msg: &T, version: u16) -> Result<Bytes, CodecError> {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_u32(0);
    buf.put_slice(&MAGIC);
    buf.put_u16(version);
    codec::encode_into(msg, &mut buf)?;
    let len = (buf.len() - 4) as u32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// Decodes a handshake payload (without its length prefix) in any version this build
/// speaks ([`PREVIOUS_VERSION`] to [`PROTOCOL_VERSION`]).
///
/// # Errors
/// See [`HandshakeError`].
pub fn decode_handshake<T: DeserializeOwned>(payload: &[u8]) -> Result<T, HandshakeError> {
    decode_handshake_versioned(payload, PREVIOUS_VERSION, PROTOCOL_VERSION).map(|(_, msg)| msg)
}

/// Decodes a handshake payload in a version from `lowest` to `highest`; returns the
/// version with the message. Magic and version are checked before anything else, so a
/// mismatch is reported as such even when the rest of the frame is in a layout this build
/// does not know.
///
/// # Errors
/// See [`HandshakeError`].
pub fn decode_handshake_versioned<T: DeserializeOwned>(
    payload: &[u8],
    lowest: u16,
    highest: u16,
) -> Result<(u16, T), HandshakeError> {
    if payload.len() < 6 {
        return Err(HandshakeError::Malformed(format!(
            "{} bytes is too short for a handshake",
            payload.len()
        )));
    }
    if payload[..4] != MAGIC {
        return Err(HandshakeError::BadMagic(payload[..4].to_vec()));
    }
    let version = u16::from_be_bytes([payload[4], payload[5]]);
    if !(lowest..=highest).contains(&version) {
        return Err(HandshakeError::Version {
            peer: version,
            lowest,
            highest,
        });
    }
    let msg = codec::decode_exact(&payload[6..]).map_err(|e| HandshakeError::Malformed(e.0))?;
    Ok((version, msg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ErrorKind;
    use crate::wire::{Identity, NodeId, RemoteError};
    use std::borrow::Cow;

    fn payload(frame: Bytes) -> BytesMut {
        let len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        assert_eq!(
            len,
            frame.len() - 4,
            "length prefix covers the payload exactly"
        );
        BytesMut::from(&frame[4..])
    }

    fn build(header: &Header<'_>, body: impl FnOnce(&mut BytesMut)) -> Bytes {
        let mut buf = BytesMut::new();
        let mut frame = FrameBuf::new(&mut buf, header).unwrap();
        body(frame.body_mut());
        frame.finish(1 << 20).unwrap();
        buf.freeze()
    }

    #[test]
    fn request_round_trips_with_its_body() {
        let header = Header::Request {
            id: 42,
            method: Cow::Borrowed("add"),
            timeout_ms: Some(1500),
            encoding: Encoding::Bincode,
            signature: None,
            trace: None,
        };
        let bytes = build(&header, |body| {
            codec::encode_into(&(2i64, 3i64), body).unwrap()
        });
        let frame = payload(bytes).freeze();
        let (decoded, body) = decode_frame(&frame).unwrap();
        assert_eq!(decoded, header);
        assert_eq!(codec::decode_exact::<(i64, i64)>(&body).unwrap(), (2, 3));
    }

    #[test]
    fn every_header_round_trips() {
        let headers = [
            Header::Cast {
                method: "log".into(),
                encoding: Encoding::Json,
            },
            Header::Response {
                id: 1,
                outcome: Ok(Encoding::Json),
            },
            Header::Response {
                id: 2,
                outcome: Err(RemoteError::new(ErrorKind::Application, "boom")),
            },
            Header::Cancel { id: 3 },
            Header::Goodbye {
                reason: "shutting down".into(),
                leaving: true,
            },
            Header::Ping,
            Header::Pong,
        ];
        for header in headers {
            let bytes = frame_bytes(&header).unwrap();
            let frame = payload(bytes).freeze();
            let (decoded, body) = decode_frame(&frame).unwrap();
            assert_eq!(decoded, header);
            assert!(body.is_empty());
        }
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_with_its_size() {
        let header = Header::Cast {
            method: "echo".into(),
            encoding: Encoding::Bincode,
        };
        // Another frame is already in the buffer: the refused one leaves no trace.
        let mut buf = BytesMut::from(&b"earlier"[..]);
        let mut frame = FrameBuf::new(&mut buf, &header).unwrap();
        frame.body_mut().put_slice(&[0u8; 2000]);
        let size = frame.finish(1000).unwrap_err();
        assert!(size > 2000);
        assert_eq!(&buf[..], b"earlier");
        // Nor does one abandoned half-way (an encoding error or a panic).
        let mut frame = FrameBuf::new(&mut buf, &header).unwrap();
        frame.body_mut().put_slice(&[1, 2, 3]);
        drop(frame);
        assert_eq!(&buf[..], b"earlier");
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_panic() {
        for garbage in [
            &b""[..],
            b"\xff",
            b"\x07\x00\x00",
            b"\x00\xfe\xff\xff\xff\xff",
        ] {
            assert!(
                decode_frame(&Bytes::copy_from_slice(garbage)).is_err(),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn truncated_header_is_an_error() {
        let header = Header::Request {
            id: 9,
            method: "square".into(),
            timeout_ms: None,
            encoding: Encoding::Json,
            signature: None,
            trace: None,
        };
        let full = payload(frame_bytes(&header).unwrap());
        for cut in 0..full.len() {
            assert!(
                decode_frame(&Bytes::copy_from_slice(&full[..cut])).is_err(),
                "cut at {cut}"
            );
        }
    }

    /// The example in docs/PROTOCOL.md, byte for byte.
    #[test]
    fn documented_example_bytes() {
        let request = Header::Request {
            id: 1,
            method: "add".into(),
            timeout_ms: Some(30_000),
            encoding: Encoding::Bincode,
            signature: None,
            trace: None,
        };
        let bytes = build(&request, |body| {
            codec::encode_into(&(2i64, 3i64), body).unwrap()
        });
        assert_eq!(
            &bytes[..],
            &[
                0, 0, 0, 15, 0x00, 0x01, 0x03, b'a', b'd', b'd', 0x01, 0xFB, 0x30, 0x75, 0x00,
                0x00, 0x00, 0x04, 0x06
            ]
        );
        let response = Header::Response {
            id: 1,
            outcome: Ok(Encoding::Bincode),
        };
        assert_eq!(
            &build(&response, |body| codec::encode_into(&5i64, body).unwrap())[..],
            &[0, 0, 0, 5, 0x02, 0x01, 0x00, 0x00, 0x0A]
        );
        let failure = Header::Response {
            id: 1,
            outcome: Err(RemoteError::new(ErrorKind::MethodNotFound, "x")),
        };
        assert_eq!(
            &frame_bytes(&failure).unwrap()[..],
            &[0, 0, 0, 6, 0x02, 0x01, 0x01, 0x00, 0x01, b'x']
        );
        // An application error with its value as JSON after the header.
        let refusal = Header::Response {
            id: 1,
            outcome: Err(RemoteError::new(ErrorKind::Application, "neg")),
        };
        let mut with_data = BytesMut::new();
        append_frame_raw(&mut with_data, &refusal, br#""neg""#, 1 << 20).unwrap();
        assert_eq!(
            &with_data[..],
            &[
                0, 0, 0, 13, 0x02, 0x01, 0x01, 0x02, 0x03, b'n', b'e', b'g', b'"', b'n', b'e',
                b'g', b'"'
            ]
        );
        let frame = with_data.freeze().slice(4..);
        let (header, body) = decode_frame(&frame).unwrap();
        let Header::Response { outcome, .. } = header else {
            panic!("not a response")
        };
        let error = crate::wire::reply_of(outcome, body).unwrap_err();
        assert_eq!(error.data.as_deref(), Some(&br#""neg""#[..]));
        // The stream example: `count(3)` with a window of 64 items.
        let open = Header::StreamOpen {
            id: 1,
            method: "count".into(),
            timeout_ms: None,
            encoding: Encoding::Bincode,
            signature: None,
            trace: None,
            credit: 64,
        };
        assert_eq!(
            &build(&open, |body| codec::encode_into(&3u64, body).unwrap())[..],
            &[
                0, 0, 0, 14, 0x08, 0x01, 0x05, b'c', b'o', b'u', b'n', b't', 0x00, 0x00, 0x00,
                0x40, 0x00, 0x03
            ]
        );
        assert_eq!(
            &frame_bytes(&Header::StreamEnd { id: 1 }).unwrap()[..],
            &[0, 0, 0, 2, 0x0B, 0x01]
        );
        let item = Header::StreamItem {
            id: 1,
            from_caller: false,
        };
        assert_eq!(
            &build(&item, |body| codec::encode_into(&0u64, body).unwrap())[..],
            &[0, 0, 0, 4, 0x09, 0x01, 0x00, 0x00]
        );
        let credit = Header::StreamCredit {
            id: 1,
            from_caller: true,
            n: 32,
        };
        assert_eq!(
            &frame_bytes(&credit).unwrap()[..],
            &[0, 0, 0, 4, 0x0A, 0x01, 0x01, 0x20]
        );
        let end = Header::Response {
            id: 1,
            outcome: Ok(Encoding::Bincode),
        };
        assert_eq!(
            &build(&end, |body| codec::encode_into(&(), body).unwrap())[..],
            &[0, 0, 0, 4, 0x02, 0x01, 0x00, 0x00]
        );
        // A traced call: the W3C example's trace id, parent span and flags, as raw bytes.
        let trace =
            crate::wire::Trace::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let traced = Header::Request {
            id: 2,
            method: "add".into(),
            timeout_ms: None,
            encoding: Encoding::Bincode,
            signature: None,
            trace,
        };
        let mut expected = vec![
            0, 0, 0, 35, 0x00, 0x02, 0x03, b'a', b'd', b'd', 0x00, 0x00, 0x00, 0x01,
        ];
        expected.extend([0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6]);
        expected.extend([0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36]);
        expected.extend([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7, 0x01]);
        assert_eq!(&frame_bytes(&traced).unwrap()[..], &expected[..]);
        let identity = Identity {
            id: NodeId(7),
            name: "a".into(),
            listen: None,
            max_frame: 1024,
            incarnation: 9,
        };
        assert_eq!(
            &encode_handshake_at(&identity, 3).unwrap()[..],
            &[
                0, 0, 0, 14, b'M', b'R', b'P', b'C', 0, 3, 0x07, 0x01, b'a', 0x00, 0xFB, 0x00,
                0x04, 0x09
            ]
        );
        assert_eq!(&encode_handshake(&identity).unwrap()[8..10], &[0, 4]);
        let mut nonce = [0xAA; 16];
        crate::wire::mark_nonce(&mut nonce, 4);
        assert_eq!(&nonce[..6], b"MRPv\x00\x04");
        let goodbye = Header::GoodbyeAfter {
            reason: "bye".into(),
            leaving: true,
            last: 5,
        };
        assert_eq!(
            &frame_bytes(&goodbye).unwrap()[..],
            &[0, 0, 0, 7, 0x0C, 0x03, b'b', b'y', b'e', 0x01, 0x05]
        );
    }

    #[test]
    fn versions_three_and_four_are_read_and_two_and_five_named() {
        let v3 = encode_handshake_at(&hello(), 3).unwrap();
        let v4 = encode_handshake_at(&hello(), 4).unwrap();
        let read = |bytes: &Bytes| decode_handshake_versioned::<Identity>(&bytes[4..], 3, 4);
        assert_eq!(read(&v3).unwrap(), (3, hello()));
        assert_eq!(read(&v4).unwrap(), (4, hello()));
        for other in [2, 5] {
            let frame = encode_handshake_at(&hello(), other).unwrap();
            let error = read(&frame).unwrap_err().to_string();
            assert_eq!(
                error,
                format!("protocol version mismatch: peer speaks {other}, this node speaks 3 to 4")
            );
        }
        let only_three = decode_handshake_versioned::<Identity>(&v4[4..], 3, 3).unwrap_err();
        assert_eq!(
            only_three.to_string(),
            "protocol version mismatch: peer speaks 4, this node speaks 3"
        );
        let mut nonce = [7u8; 16];
        assert_eq!(crate::wire::marked_version(&nonce), None);
        crate::wire::mark_nonce(&mut nonce, 4);
        assert_eq!(crate::wire::marked_version(&nonce), Some(4));
        assert_eq!(&nonce[6..], &[7u8; 10], "the rest stays random");
    }

    fn hello() -> Identity {
        Identity {
            id: NodeId(7),
            name: "a".into(),
            listen: Some("127.0.0.1:1".into()),
            max_frame: 1 << 20,
            incarnation: 1,
        }
    }

    #[test]
    fn handshake_round_trips() {
        let bytes = encode_handshake(&hello()).unwrap();
        assert_eq!(decode_handshake::<Identity>(&bytes[4..]).unwrap(), hello());
    }

    #[test]
    fn wrong_magic_and_wrong_version_are_named() {
        let bytes = encode_handshake(&hello()).unwrap();
        let mut bad_magic = bytes[4..].to_vec();
        bad_magic[0] = b'X';
        assert!(matches!(
            decode_handshake::<Identity>(&bad_magic),
            Err(HandshakeError::BadMagic(_))
        ));
        let mut bad_version = bytes[4..].to_vec();
        bad_version[5] = bad_version[5].wrapping_add(1);
        let err = decode_handshake::<Identity>(&bad_version).unwrap_err();
        assert!(matches!(err, HandshakeError::Version { .. }));
        assert!(err.to_string().contains("version mismatch"));
        assert!(matches!(
            decode_handshake::<Identity>(b"MRP"),
            Err(HandshakeError::Malformed(_))
        ));
    }
}
