//! Bounded fuzzing of the API's request parser and its Host/Origin checks: any bytes give a
//! request or the response that refuses it, never a panic. The seeds are requests the CLI,
//! a browser and the tests send (`tests/fuzz-corpus/http/`).

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

use std::time::Instant;

use medic_controller::http::{parse_head, request_allowed};
use proptest::prelude::*;

fn seeds() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fuzz-corpus/http");
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

/// A seed, changed: bytes flipped, inserted or cut, a line doubled, control characters.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let seeds = seeds();
    (
        0..seeds.len(),
        prop::collection::vec((any::<u16>(), any::<u8>(), 0u8..5), 0..12),
    )
        .prop_map(move |(i, edits)| {
            let mut b = seeds[i].clone();
            for (at, byte, how) in edits {
                let at = usize::from(at) % (b.len() + 1);
                match how {
                    0 => b.insert(at, byte),
                    1 if at < b.len() => b[at] ^= byte,
                    2 => b.truncate(at),
                    3 => {
                        let line: Vec<u8> = b[at..]
                            .iter()
                            .take_while(|c| **c != b'\n')
                            .copied()
                            .collect();
                        b.splice(at..at, line).for_each(drop);
                    }
                    _ => b
                        .splice(at..at, [b'\r', b'\n', 0, 0x1b, b':'])
                        .for_each(drop),
                };
            }
            b
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3_000, ..ProptestConfig::default() })]

    #[test]
    fn any_request_head_is_parsed_or_refused(bytes in prop_oneof![mutated(), prop::collection::vec(any::<u8>(), 0..512)]) {
        if let Ok((req, length)) = parse_head(&bytes) {
            prop_assert!(length <= 64 * 1024);
            let _ = request_allowed(&req);
        }
    }
}

#[test]
fn the_seed_requests_parse() {
    let t = Instant::now();
    for s in seeds() {
        let head_end = s
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(s.len());
        let (req, _) = parse_head(&s[..head_end]).unwrap();
        assert!(request_allowed(&req).is_ok(), "{req:?}");
    }
    eprintln!("seeds parsed in {:?}", t.elapsed());
}
