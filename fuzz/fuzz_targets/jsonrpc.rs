//! The gateway's JSON-RPC request handling (single, batch, notification), methods stubbed.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    meshrpc::fuzzing::jsonrpc(data);
});
