//! Every decoder that reads network input, fed random and mutated bytes: none may panic, and
//! none may take long. A bounded, seeded stand-in for the fuzz targets (see
//! docs/RELIABILITY.md); the seed is printed so a failure can be replayed.

use bytes::{Bytes, BytesMut};
use meshrpc::wire::{self, Encoding, FrameBuf, Greeting, Header, Hello, Identity, NodeId, Welcome};
use rand::{Rng, SeedableRng};

const ROUNDS: usize = 20_000;

fn seeds() -> Vec<Vec<u8>> {
    let identity = Identity {
        id: NodeId(7),
        name: "n".into(),
        listen: Some("127.0.0.1:1".into()),
        max_frame: 1 << 20,
        incarnation: 3,
    };
    let mut frames = vec![
        wire::encode_handshake(&Hello {
            identity: identity.clone(),
            nonce: [1; 16],
            proof: Some([2; 32]),
        })
        .unwrap()
        .to_vec(),
        wire::encode_handshake(&Greeting {
            identity,
            nonce: [3; 16],
        })
        .unwrap()
        .to_vec(),
        wire::encode_handshake(&Welcome {
            verdict: wire::Verdict::Refuse("no".into()),
            proof: None,
        })
        .unwrap()
        .to_vec(),
    ];
    for header in [
        Header::Request {
            id: 1,
            method: "add".into(),
            timeout_ms: Some(1000),
            encoding: Encoding::Bincode,
            signature: None,
            trace: None,
        },
        Header::Cast {
            method: "log".into(),
            encoding: Encoding::Json,
        },
        Header::Goodbye {
            reason: "bye".into(),
            leaving: true,
        },
    ] {
        let mut buf = BytesMut::new();
        let mut frame = FrameBuf::new(&mut buf, &header).unwrap();
        wire::encode_value(&(2i64, "three", vec![4u8; 9]), frame.body_mut()).unwrap();
        frame.finish(usize::MAX).unwrap();
        frames.push(buf.to_vec());
    }
    frames
}

fn mutate(rng: &mut impl Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    match rng.random_range(0..4) {
        0 => {
            let mut random = vec![0u8; rng.random_range(0..64)];
            rng.fill_bytes(&mut random);
            random
        }
        1 if !out.is_empty() => {
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..out.len());
                out[i] = rng.random();
            }
            out
        }
        2 => {
            out.truncate(rng.random_range(0..=out.len()));
            out
        }
        _ => {
            let at = rng.random_range(0..=out.len());
            let mut junk = vec![0u8; rng.random_range(1..16)];
            rng.fill_bytes(&mut junk);
            out.splice(at..at, junk);
            out
        }
    }
}

#[test]
fn frame_and_handshake_decoders_never_panic() {
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let corpus = seeds();
    for _ in 0..ROUNDS {
        let pick = rng.random_range(0..corpus.len());
        let input = mutate(&mut rng, &corpus[pick]);
        let payload = input.get(4..).unwrap_or_default();
        let _ = wire::decode_handshake::<Hello>(payload);
        let _ = wire::decode_handshake::<Greeting>(payload);
        let _ = wire::decode_handshake::<Welcome>(payload);
        let frame = Bytes::copy_from_slice(payload);
        if let Ok((_, body)) = wire::decode_frame(&frame) {
            let _ = wire::decode_value::<(i64, String, Vec<u8>)>(&body);
            let _ = wire::decode_value::<serde_bytes::ByteBuf>(&body);
        }
    }
}
