//! A frame payload as the reader gets it: header, then a body decoded as a typical argument.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let payload = bytes::Bytes::copy_from_slice(data);
    if let Ok((_, body)) = meshrpc::wire::decode_frame(&payload) {
        let _ = meshrpc::wire::decode_value::<(i64, String, Vec<u8>)>(&body);
        let _ = meshrpc::wire::decode_value::<serde_bytes::ByteBuf>(&body);
    }
});
