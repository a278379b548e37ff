//! Property-based fuzzing of the parsers that face the network, with seed corpora kept in the
//! repository: [`inputs`] yields random bytes and mutations of the seeds (bytes flipped,
//! inserted and cut, truncations, repetitions), for a test to feed through a parser and
//! check that it answers (accepts or refuses) without panicking or over-allocating. The case
//! count bounds the time: [`config`] (1,000 cases, or `FUZZ_CASES`).
use std::path::Path;

use proptest::prelude::*;

/// The seed inputs: every file in `dir` (e.g. `concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus")`).
///
/// # Panics
/// The directory cannot be read or is empty: a fuzz test without seeds is a mistake.
pub fn corpus(dir: impl AsRef<Path>) -> Vec<Vec<u8>> {
    let dir = dir.as_ref();
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("fuzz corpus {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file() && e.path().extension().is_none_or(|x| x != "md"))
        .map(|e| std::fs::read(e.path()).expect("read a seed"))
        .collect();
    assert!(!seeds.is_empty(), "fuzz corpus {} has no seed", dir.display());
    seeds.sort();
    seeds
}

/// One change to a seed.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, u8),
    Cut(usize, usize),
    Truncate(usize),
    Repeat(usize, usize),
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        let len = bytes.len().max(1);
        match *edit {
            Edit::Flip(at, mask) => {
                if let Some(b) = bytes.get_mut(at % len) {
                    *b ^= mask;
                }
            }
            Edit::Insert(at, b) => bytes.insert((at % len).min(bytes.len()), b),
            Edit::Cut(at, n) => {
                let at = (at % len).min(bytes.len());
                let end = (at + n).min(bytes.len());
                bytes.drain(at..end);
            }
            Edit::Truncate(at) => bytes.truncate(at % len),
            Edit::Repeat(at, n) => {
                let at = (at % len).min(bytes.len());
                let chunk: Vec<u8> = bytes[at..].iter().take(16).copied().collect();
                for _ in 0..n {
                    bytes.extend_from_slice(&chunk);
                }
            }
        }
    }
    bytes
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(a, m)| Edit::Flip(a, m)),
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Edit::Insert(a, b)),
        (any::<usize>(), 1..64usize).prop_map(|(a, n)| Edit::Cut(a, n)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), 1..64usize).prop_map(|(a, n)| Edit::Repeat(a, n)),
    ]
}

/// Random bytes (a quarter of the cases) and mutated seeds (the rest).
pub fn inputs(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let n = seeds.len();
    let mutated = (0..n, prop::collection::vec(edit(), 0..8))
        .prop_map(move |(i, edits)| apply(seeds[i].clone(), &edits));
    prop_oneof![1 => prop::collection::vec(any::<u8>(), 0..512), 3 => mutated]
}

/// Cases per fuzz test: `FUZZ_CASES` or 1,000 (a few seconds per parser).
pub fn config() -> ProptestConfig {
    let cases = std::env::var("FUZZ_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(1_000);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}
