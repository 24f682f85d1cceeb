//! Encoding and decoding one request frame, as the runtime does on every call: header and
//! arguments straight into a reused buffer, then header (borrowing the method name) and
//! arguments back out. A small `add` request and a 64 KiB `echo` request.
//!
//! `cargo bench --bench codec`

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use meshrpc::wire::{decode_frame, decode_value, encode_value, Encoding, FrameBuf, Header};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_bytes::ByteBuf;

fn encode<A: Serialize>(buf: &mut BytesMut, method: &str, args: &A) {
    let header = Header::Request {
        id: 7,
        method: method.into(),
        timeout_ms: Some(30_000),
        encoding: Encoding::Bincode,
        signature: None,
        trace: None,
    };
    let mut frame = FrameBuf::new(buf, &header).expect("header");
    encode_value(args, frame.body_mut()).expect("args");
    frame.finish(usize::MAX).expect("size");
}

fn decode<A: DeserializeOwned>(frame: &Bytes) -> A {
    // The reader sees the frame without its length prefix.
    let payload = frame.slice(4..);
    let (header, body) = decode_frame(&payload).expect("header");
    assert!(matches!(header, Header::Request { id: 7, .. }));
    decode_value(&body).expect("args")
}

fn bench_one<A: Serialize + DeserializeOwned>(
    c: &mut Criterion,
    name: &str,
    method: &str,
    args: A,
    bytes: u64,
) {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(bytes));
    let mut buf = BytesMut::with_capacity(128 << 10);
    group.bench_function("encode", |b| {
        b.iter(|| {
            buf.clear();
            encode(&mut buf, method, &args);
        })
    });
    buf.clear();
    encode(&mut buf, method, &args);
    let frame = buf.clone().freeze();
    group.bench_function("decode", |b| b.iter(|| decode::<A>(&frame)));
    group.finish();
}

fn codec(c: &mut Criterion) {
    bench_one(c, "codec_add", "add", (2i64, 3i64), 17);
    bench_one(
        c,
        "codec_echo_64k",
        "echo",
        ByteBuf::from(vec![0xA5u8; 64 << 10]),
        64 << 10,
    );
}

criterion_group!(benches, codec);
criterion_main!(benches);
