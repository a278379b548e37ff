//! The scanner against serde_json: on hand-picked edge cases, on generated frames (every key
//! order, extra members of every JSON kind, whitespace, escapes, repeated keys), on mutations of
//! them, and on the fuzz corpus. `parse` must answer exactly as the serde_json-only path does.
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use uuid::Uuid;

use super::message;
use crate::protocol::{Frame, FrameLimits, Id, message_by_serde, parse};
use crate::wsserver::world::{Shape, World};

const A: &str = "5c2f8e2a-6f7b-4a3c-9d1e-0b8a7c6d5e4f";
const B: &str = "0d9c8b7a-6e5f-4d3c-2b1a-0f9e8d7c6b5a";

fn id(s: &str) -> Id {
    Uuid::parse_str(s).unwrap().as_u128()
}

/// `parse` agrees with serde_json alone: the same ids, or a rejection with the same error. The
/// scanner, when it answers, gives serde_json's ids. Returns whether the scanner answered.
fn agrees(text: &str) -> Result<bool, TestCaseError> {
    let limits = FrameLimits { message_bytes: 1 << 20, association_bytes: 1 << 20 };
    let fast = message(text);
    let is_message = text.bytes().find(|b| !b.is_ascii_whitespace()) == Some(b'{');
    let parsed = parse(text, &limits);
    if !is_message {
        prop_assert!(fast.is_none(), "scanner accepted a non-message {text:?}");
        return Ok(false);
    }
    let serde = message_by_serde(text);
    if let Some(ids) = fast {
        prop_assert_eq!(Some(ids), serde.as_ref().ok().copied(), "scanner vs serde on {:?}", text);
    }
    match (parsed, serde) {
        (Ok(Frame::Message { source, destination }), Ok(ids)) => {
            prop_assert_eq!((source, destination), ids, "{:?}", text)
        }
        (Err(got), Err(want)) => {
            let got = switchboard_core::describe_error(&got);
            prop_assert_eq!(got, format!("invalid frame: {want}"), "{:?}", text)
        }
        (got, want) => prop_assert!(false, "parse {got:?} vs serde {want:?} on {text:?}"),
    }
    Ok(fast.is_some())
}

fn fast(text: &str) -> bool {
    agrees(text).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_common_shapes_take_the_fast_path() {
    let (a, b) = (id(A), id(B));
    let canonical = format!(
        r#"{{"source":"{A}","destination":"{B}","method":"GET","path":"/list","httpStatus":200}}"#
    );
    assert_eq!(message(&canonical), Some((a, b)));
    assert_eq!(message(&format!(" \r\n\t{canonical}\n ")), Some((a, b)));
    assert_eq!(message(&format!(r#"{{"destination":"{B}","source":"{A}"}}"#)), Some((a, b)));
    let upper = format!(r#"{{"source":"{}","destination":"{B}"}}"#, A.to_uppercase());
    assert_eq!(message(&upper), Some((a, b)));
    for extra in [
        r#","s":"""#,
        r#","":"é ü ☃ 🦀""#,
        r#","n":0,"m":-0,"k":-12.5e+3,"j":1E9,"i":0.0e-0"#,
        r#","t":true,"f":false,"z":null"#,
        r#","Source":1,"sources":2,"destinatio":3"#,
    ] {
        let text = format!(r#"{{"source":"{A}","destination":"{B}"{extra}}}"#);
        assert!(fast(&text), "{text}");
    }
    // The bench's and the simulator's frames.
    let mut world = World::new(Shape {
        parents: 3,
        children_per_parent: 3,
        unknown_ratio: 0.0,
        pad: true,
        children_key: false,
        seed: 7,
    });
    for _ in 0..100 {
        let (s, d) = world.pick_message();
        let frame = world.message_frame(s, d);
        assert_eq!(message(&frame), Some((s.as_u128(), d.as_u128())), "{frame}");
    }
}

#[test]
fn anything_unusual_goes_to_serde_json_with_the_same_outcome() {
    let head = format!(r#"{{"source":"{A}","destination":"{B}""#);
    let cases = [
        // Accepted by serde_json, declined by the scanner.
        format!(r#"{{"sour\u0063e":"{A}","destination":"{B}"}}"#),
        format!(r#"{{"source":"{A}","destination":"{B}","p":"a\"b"}}"#),
        format!(r#"{{"source":"{A}","destination":"{B}","p\n":1}}"#),
        format!(r#"{{ "source":"{A}","destination":"{B}"}}"#),
        format!(r#"{{"source" : "{A}", "destination": "{B}" }}"#),
        format!(r#"{{"source":"{A}","destination":"{B}","x":{{"y":[1,{{}}]}}}}"#),
        format!(r#"{{"source":"{A}","destination":"{B}","x":[]}}"#),
        format!(r#"{{"method":"GET","source":"{A}","destination":"{B}"}}"#),
        format!(r#"{{"source":"{A}","method":"GET","destination":"{B}"}}"#),
        format!(r#"{{"source":"{{{A}}}","destination":"{B}"}}"#),
        format!(r#"{{"source":"{}","destination":"{B}"}}"#, A.replace('-', "")),
        // Rejected by serde_json.
        format!(r#"{{"source":"{A}","destination":"{B}","source":"{A}"}}"#),
        format!(r#"{{"source":"{A}","destination":"{B}","destination":"{B}"}}"#),
        format!(r#"{{"source":"{A}","source":"{A}","destination":"{B}"}}"#),
        format!(r#"{{"source":"{A}"}}"#),
        format!(r#"{{"destination":"{B}"}}"#),
        format!("{head}}} x"),
        format!("{head}}}}}"),
        format!("{head}}},"),
        format!("{head}}}\x0c"),
        format!("\x0c{head}}}"),
        format!("{head},}}"),
        format!("{head},"),
        head.clone(),
        format!("{head},\"p\"}}"),
        format!("{head},\"p\":}}"),
        format!("{head},p:1}}"),
        format!("{head},\"p\":01}}"),
        format!("{head},\"p\":-}}"),
        format!("{head},\"p\":1.}}"),
        format!("{head},\"p\":.5}}"),
        format!("{head},\"p\":1e}}"),
        format!("{head},\"p\":1e+}}"),
        format!("{head},\"p\":+1}}"),
        format!("{head},\"p\":tru}}"),
        format!("{head},\"p\":truex}}"),
        format!("{head},\"p\":nul}}"),
        format!("{head},\"p\":\"a\x01b\"}}"),
        format!("{head},\"p\":\"a\tb\"}}"),
        format!("{head},\"p\":\"abc}}"),
        format!("{head},\"p\":\"a\\qb\"}}"),
        format!("{head},\"p\":[1,}}"),
        format!("{head},\"p\":{{}}"),
        format!(r#"{{"source":"{}","destination":"{B}"}}"#, &A[..35]),
        format!(r#"{{"source":"{A}0","destination":"{B}"}}"#),
        format!(r#"{{"source":"{}","destination":"{B}"}}"#, A.replace('c', "g")),
        format!(r#"{{"source":{},"destination":"{B}"}}"#, id(A)),
        format!(r#"{{"source":null,"destination":"{B}"}}"#),
        "{}".to_owned(),
        "{".to_owned(),
    ];
    for text in &cases {
        assert!(!fast(text), "the scanner took {text:?}");
    }
}

/// An id as a JSON string body: hyphenated (either case), or another spelling serde_json and
/// the uuid crate accept, or not a UUID at all.
fn id_text() -> impl Strategy<Value = (String, Id)> {
    (any::<u128>(), 0..8u8).prop_map(|(id, form)| {
        let u = Uuid::from_u128(id);
        let text = match form {
            0 => u.hyphenated().to_string().to_uppercase(),
            1 => u.simple().to_string(),
            2 => u.braced().to_string(),
            3 => "not-a-uuid".to_owned(),
            _ => u.hyphenated().to_string(),
        };
        (text, id)
    })
}

/// One scalar or nested JSON value, valid or not, escaped or not.
fn extra_value() -> impl Strategy<Value = String> {
    const FIXED: &[&str] = &[
        "0",
        "-0",
        "200",
        "-12.5e+3",
        "1E9",
        "0.0e-0",
        "01",
        "1.",
        "-",
        "1e",
        ".5",
        "+1",
        "1e999",
        "true",
        "false",
        "null",
        "tru",
        "nul",
        "truex",
        "\"\"",
        "\"GET\"",
        "\"/list?a=1\"",
        "\"é☃🦀\"",
        r#""a\"b""#,
        r#""\u00e9""#,
        r#""\q""#,
        "\"a\tb\"",
        "\"abc",
        "{}",
        "[]",
        r#"{"a":[1,2,{"b":null}]}"#,
        "[1,",
        "{\"a\"}",
        "",
    ];
    prop_oneof![
        3 => prop::sample::select(FIXED).prop_map(str::to_owned),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_map(|f| f.to_string()),
        1 => "[ -~]{0,12}".prop_map(|s| format!("\"{s}\"")),
    ]
}

fn extra_key() -> impl Strategy<Value = String> {
    const FIXED: &[&str] = &[
        "method",
        "path",
        "httpStatus",
        "",
        "Source",
        "sources",
        "sourc",
        "destinatio",
        "ü",
        r"sour\u0063e",
        "source",
        "destination",
        "p\"q",
    ];
    prop_oneof![
        4 => prop::sample::select(&FIXED[..10]).prop_map(str::to_owned),
        1 => prop::sample::select(&FIXED[10..]).prop_map(str::to_owned),
        1 => "[a-zA-Z_]{1,10}",
    ]
}

/// A message frame from its parts: the id members at `at` among the extras, in either order,
/// with whitespace around the object and, when `spaced`, inside it.
fn frame() -> impl Strategy<Value = String> {
    (
        id_text(),
        id_text(),
        prop::collection::vec((extra_key(), extra_value()), 0..5),
        (any::<bool>(), 0..6usize, prop::bool::weighted(0.2)),
        prop::collection::vec(
            prop::sample::select(&["", "", "", " ", "\n", "\t", "\r", "\x0c"][..]),
            16,
        ),
    )
        .prop_map(|((s, _), (d, _), extras, (source_first, at, spaced), gaps)| {
            let ids = [format!("\"source\":\"{s}\""), format!("\"destination\":\"{d}\"")];
            let mut members: Vec<String> =
                extras.into_iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            let (first, second) = if source_first { (0, 1) } else { (1, 0) };
            let at = at.min(members.len());
            members.insert(at, ids[second].clone());
            members.insert(at, ids[first].clone());
            let gap = |i: usize| if spaced { gaps[i % gaps.len()] } else { "" };
            let sep = format!("{},{}", gap(3), gap(4));
            let inner = members.join(&sep).replace(':', &format!("{}:{}", gap(5), gap(6)));
            format!("{}{{{}{inner}{}}}{}", gaps[0], gap(1), gap(2), gaps[7])
        })
}

/// One edit to a frame's bytes, mostly with bytes that matter to JSON.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
    Duplicate(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let byte = prop_oneof![
        3 => prop::sample::select(&b"\"\\,:{}[] \t\n0-.eE+atfnlu\x0c\x00"[..]),
        1 => any::<u8>(),
    ];
    prop_oneof![
        (any::<usize>(), byte.clone()).prop_map(|(at, b)| Edit::Flip(at, b)),
        (any::<usize>(), byte).prop_map(|(at, b)| Edit::Insert(at, b)),
        any::<usize>().prop_map(Edit::Delete),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), 1..48usize).prop_map(|(at, n)| Edit::Duplicate(at, n)),
    ]
}

fn mutate(text: &str, edits: &[Edit]) -> String {
    let mut b = text.as_bytes().to_vec();
    for e in edits {
        let len = b.len().max(1);
        match *e {
            Edit::Flip(at, x) => {
                if let Some(c) = b.get_mut(at % len) {
                    *c = x;
                }
            }
            Edit::Insert(at, x) => b.insert((at % len).min(b.len()), x),
            Edit::Delete(at) => {
                if at % len < b.len() {
                    b.remove(at % len);
                }
            }
            Edit::Truncate(at) => b.truncate(at % len),
            // A span copied right after itself: repeated keys, members, ids.
            Edit::Duplicate(at, n) => {
                let at = (at % len).min(b.len());
                let span: Vec<u8> = b[at..].iter().take(n).copied().collect();
                let end = at + span.len();
                b.splice(end..end, span);
            }
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn generated_frames_agree_with_serde_json(text in frame()) {
        agrees(&text)?;
    }

    #[test]
    fn mutated_frames_agree_with_serde_json(
        text in frame(),
        edits in prop::collection::vec(edit(), 1..4),
    ) {
        agrees(&mutate(&text, &edits))?;
    }

    /// Compact canonical frames (what servers send) always take the fast path.
    #[test]
    fn canonical_frames_take_the_fast_path(
        s in any::<u128>(),
        d in any::<u128>(),
        status in any::<u16>(),
        source_first in any::<bool>(),
    ) {
        let (su, du) = (Uuid::from_u128(s), Uuid::from_u128(d));
        let text = if source_first {
            format!(r#"{{"source":"{su}","destination":"{du}","method":"GET","path":"/list","httpStatus":{status}}}"#)
        } else {
            format!(r#"{{"destination":"{du}","source":"{su}","httpStatus":{status}}}"#)
        };
        prop_assert!(agrees(&text)?);
        prop_assert_eq!(message(&text), Some((s, d)));
    }
}

proptest! {
    #![proptest_config(switchboard_testkit::fuzz::config())]

    /// Frames from the network: parsed or refused, never a panic, and always as serde_json
    /// alone would.
    #[test]
    fn fuzz_message_parser(body in switchboard_testkit::fuzz::inputs(
        switchboard_testkit::fuzz::corpus(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus")))) {
        // Text frames are UTF-8 (tungstenite checks); keep the mutated bytes' structure anyway.
        agrees(&String::from_utf8_lossy(&body))?;
    }
}

/// The bench's message pool (`switchboard bench aggregator` defaults: seed 42, 50 × 20).
fn bench_pool() -> Vec<String> {
    let mut world = World::new(Shape {
        parents: 50,
        children_per_parent: 20,
        unknown_ratio: 0.0,
        pad: false,
        children_key: false,
        seed: 42,
    });
    let _ = world.full_list();
    (0..4096)
        .map(|_| {
            let (s, d) = world.pick_message();
            world.message_frame(s, d)
        })
        .collect()
}

#[inline(never)]
fn parse_pool(pool: &[String], rounds: usize) -> u128 {
    let limits = FrameLimits::new(64 << 10, 1_000_000);
    let mut acc = 0;
    for _ in 0..rounds {
        for text in pool {
            if let Ok(Frame::Message { source, destination }) =
                parse(std::hint::black_box(text), &limits)
            {
                acc ^= source ^ destination;
            }
        }
    }
    acc
}

#[inline(never)]
fn parse_pool_by_serde(pool: &[String], rounds: usize) -> u128 {
    let mut acc = 0;
    for _ in 0..rounds {
        for text in pool {
            if let Ok((source, destination)) = message_by_serde(std::hint::black_box(text)) {
                acc ^= source ^ destination;
            }
        }
    }
    acc
}

/// A fixed amount of parsing (25 × 4,096 frames each way) whose instruction counts are stable
/// on a noisy machine; run it in a release build under callgrind and read the inclusive counts
/// of `parse_pool` and `parse_pool_by_serde` (see docs/aggregator.md, "Benchmark").
#[test]
#[ignore = "a measurement, run under callgrind"]
fn parse_cost() {
    let pool = bench_pool();
    let fast = parse_pool(&pool, 25);
    assert_eq!(fast, parse_pool_by_serde(&pool, 25));
}

/// The word-at-a-time search for a string's end finds the same byte as a byte loop, for every
/// byte value at every position of strings shorter and longer than a word, with other stop
/// bytes placed after it (where borrows could mark false hits).
#[test]
fn string_end_finds_the_first_stop_byte_like_a_byte_loop() {
    let naive = |b: &[u8]| b.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20);
    for len in 0..=24 {
        for at in 0..len {
            for byte in 0..=255u8 {
                for after in [b'a', 0x00, b'"', 0x1f, 0xff] {
                    let mut b = vec![b'x'; len];
                    b[at] = byte;
                    if at + 1 < len {
                        b[at + 1] = after;
                    }
                    assert_eq!(super::string_end(&b), naive(&b), "{b:?}");
                }
            }
        }
    }
}
