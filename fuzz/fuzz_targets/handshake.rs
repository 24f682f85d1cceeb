//! The three handshake messages, as the dialer and the acceptor decode them.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meshrpc::wire::{decode_handshake, Greeting, Hello, Welcome};

fuzz_target!(|data: &[u8]| {
    let _ = decode_handshake::<Greeting>(data);
    let _ = decode_handshake::<Hello>(data);
    let _ = decode_handshake::<Welcome>(data);
});
