//! The aggregator ↔ wsserver wire contract (JSON text frames), parsed without per-message
//! allocation.
//!
//! A frame is classified by its first non-whitespace byte: `[` is an association list,
//! `{` is one message. Messages are the hot path: they are deserialized from the borrowed
//! frame text straight into 128-bit keys, so no `String` is built per message (serde_json on
//! borrowed `&str` measured faster than simd-json on ~150-byte frames). Association lists are
//! rare, so each entry is parsed on its own: one bad entry is skipped and counted instead of
//! costing the whole list.
use std::fmt::{self, Write as _};

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;
use uuid::Uuid;

/// A service id (parent or child) as its 128-bit UUID value.
pub(crate) type Id = u128;

/// One decoded frame from the server.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// `[{"parent":…,"child":…}, …]`: an association update.
    Associations {
        /// Accepted `(parent, child)` pairs, in frame order (a later pair for a child wins).
        pairs: Vec<(Id, Id)>,
        /// Entries that were not valid associations and were skipped.
        skipped: usize,
    },
    /// `{"source":…,"destination":…,…}`: one call between two children.
    Message {
        /// Child that made the call.
        source: Id,
        /// Child that received it.
        destination: Id,
    },
}

/// Why a frame was rejected. Each variant is a metric label, so they are few and stable.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// Nothing but whitespace.
    #[error("empty frame")]
    Empty,
    /// Neither `[` nor `{` first.
    #[error("frame starts with {0:?}, expected '[' or '{{'")]
    UnknownKind(char),
    /// Larger than the configured limit.
    #[error("frame of {0} bytes exceeds the limit")]
    Oversized(usize),
    /// Not valid JSON for its kind, or an id is not a UUID.
    #[error("invalid frame: {0}")]
    Invalid(#[from] serde_json::Error),
}

impl FrameError {
    /// Metric label for this rejection.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::UnknownKind(_) => "unknown_kind",
            Self::Oversized(_) => "oversized",
            Self::Invalid(_) => "invalid",
        }
    }
}

/// Parses one text frame, rejecting frames longer than `max_bytes`.
pub(crate) fn parse(text: &str, max_bytes: usize) -> Result<Frame, FrameError> {
    if text.len() > max_bytes {
        return Err(FrameError::Oversized(text.len()));
    }
    match text.bytes().find(|b| !b.is_ascii_whitespace()) {
        None => Err(FrameError::Empty),
        Some(b'{') => {
            let m: MessageWire = serde_json::from_str(text)?;
            Ok(Frame::Message { source: m.source.0, destination: m.destination.0 })
        }
        Some(b'[') => {
            let raw: Vec<&RawValue> = serde_json::from_str(text)?;
            let mut pairs = Vec::with_capacity(raw.len());
            let mut skipped = 0;
            for entry in raw {
                match serde_json::from_str::<EntryWire>(entry.get()) {
                    Ok(e) => pairs.extend(e.child.0.into_iter().map(|c| (e.parent.0, c))),
                    Err(_) => skipped += 1,
                }
            }
            Ok(Frame::Associations { pairs, skipped })
        }
        Some(b) => Err(FrameError::UnknownKind(char::from(b))),
    }
}

/// Serializes a report: `[{"source":P,"destination":P,"count":n}, …]`.
pub(crate) fn encode_report(rows: &[(Id, Id, u64)]) -> String {
    // ~100 bytes per row; written by hand to avoid an intermediate Value tree.
    let mut out = String::with_capacity(2 + rows.len() * 100);
    out.push('[');
    for (i, (source, destination, count)) in rows.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            r#"{{"source":"{}","destination":"{}","count":{count}}}"#,
            Uuid::from_u128(*source).hyphenated(),
            Uuid::from_u128(*destination).hyphenated(),
        );
    }
    out.push(']');
    out
}

#[derive(Deserialize)]
struct MessageWire {
    source: Key,
    destination: Key,
}

#[derive(Deserialize)]
struct EntryWire {
    parent: Key,
    /// Deployed servers send `children` as well; accept a single id or a list under either key.
    #[serde(alias = "children")]
    child: Keys,
}

/// A UUID parsed from a borrowed string straight into its 128-bit value.
struct Key(Id);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a UUID string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
        match parse_hyphenated(v.as_bytes()) {
            Some(id) => Ok(Key(id)),
            // Other spellings (simple, braced, urn) are rare: the uuid crate handles them.
            None => Uuid::try_parse(v).map(|u| Key(u.as_u128())).map_err(E::custom),
        }
    }
}

/// Hex digit values; `0x10` marks a byte that is not a hex digit.
const HEX: [u8; 256] = {
    let mut t = [0x10u8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Positions of the 32 hex digits in `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
const DIGITS: [usize; 32] = {
    let mut p = [0usize; 32];
    let (mut i, mut k) = (0, 0);
    while i < 36 {
        if i != 8 && i != 13 && i != 18 && i != 23 {
            p[k] = i;
            k += 1;
        }
        i += 1;
    }
    p
};

/// The hot-path UUID parser for the canonical hyphenated form: branch-free over the digits,
/// validity checked once at the end. About twice as fast as the general parser here.
#[inline]
fn parse_hyphenated(b: &[u8]) -> Option<Id> {
    let b: &[u8; 36] = b.try_into().ok()?;
    if b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
        return None;
    }
    let (mut hi, mut lo, mut bad) = (0u64, 0u64, 0u8);
    for &pos in &DIGITS[..16] {
        let d = HEX[b[pos] as usize];
        bad |= d;
        hi = (hi << 4) | u64::from(d & 0xf);
    }
    for &pos in &DIGITS[16..] {
        let d = HEX[b[pos] as usize];
        bad |= d;
        lo = (lo << 4) | u64::from(d & 0xf);
    }
    (bad & 0x10 == 0).then_some((Id::from(hi) << 64) | Id::from(lo))
}

/// One UUID or a list of them.
struct Keys(Vec<Id>);

impl<'de> Deserialize<'de> for Keys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KeysVisitor)
    }
}

struct KeysVisitor;

impl<'de> Visitor<'de> for KeysVisitor {
    type Value = Keys;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a UUID string or a list of them")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Keys, E> {
        KeyVisitor.visit_str(v).map(|k| Keys(vec![k.0]))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Keys, A::Error> {
        let mut ids = Vec::new();
        while let Some(k) = seq.next_element::<Key>()? {
            ids.push(k.0);
        }
        Ok(Keys(ids))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "5c2f8e2a-6f7b-4a3c-9d1e-0b8a7c6d5e4f";
    const B: &str = "0d9c8b7a-6e5f-4d3c-2b1a-0f9e8d7c6b5a";

    fn id(s: &str) -> Id {
        Uuid::parse_str(s).unwrap().as_u128()
    }

    #[test]
    fn message_with_extra_fields_and_padding() {
        let text = format!(
            " \n\t{{\"source\":\"{A}\",\"destination\":\"{B}\",\"method\":\"GET\",\"path\":\"/list\",\"httpStatus\":400}}\n"
        );
        assert_eq!(
            parse(&text, 1024).unwrap(),
            Frame::Message { source: id(A), destination: id(B) }
        );
    }

    #[test]
    fn associations_accept_child_children_and_lists() {
        let text = format!(
            "\t[{{\"parent\":\"{A}\",\"child\":\"{B}\"}}, {{\"parent\":\"{B}\",\"children\":\"{A}\"}},\n {{\"parent\":\"{A}\",\"children\":[\"{A}\",\"{B}\"]}}]"
        );
        let Frame::Associations { pairs, skipped } = parse(&text, 4096).unwrap() else {
            panic!("not an association list")
        };
        assert_eq!(skipped, 0);
        assert_eq!(pairs, vec![(id(A), id(B)), (id(B), id(A)), (id(A), id(A)), (id(A), id(B))]);
    }

    #[test]
    fn bad_entries_are_skipped_one_by_one() {
        let text = format!(
            "[{{\"parent\":\"nope\",\"child\":\"{B}\"}},{{\"parent\":\"{A}\"}},7,{{\"parent\":\"{A}\",\"child\":\"{B}\"}}]"
        );
        let Frame::Associations { pairs, skipped } = parse(&text, 4096).unwrap() else {
            panic!("not an association list")
        };
        assert_eq!((pairs, skipped), (vec![(id(A), id(B))], 3));
    }

    #[test]
    fn malformed_frames_are_errors_with_reasons() {
        let cases = [
            ("   ", "empty"),
            ("hello", "unknown_kind"),
            ("{\"source\":1}", "invalid"),
            ("{\"source\":\"x\",\"destination\":\"y\"}", "invalid"),
            ("[{", "invalid"),
            ("{\"source\":", "invalid"),
        ];
        for (text, reason) in cases {
            assert_eq!(parse(text, 1024).unwrap_err().reason(), reason, "{text:?}");
        }
        let big = format!("{{\"source\":\"{A}\",\"destination\":\"{B}\"}}");
        assert_eq!(parse(&big, 10).unwrap_err().reason(), "oversized");
    }

    proptest::proptest! {
        #[test]
        fn fast_uuid_parser_agrees_with_the_uuid_crate(
            id in proptest::prelude::any::<u128>(),
            upper in proptest::prelude::any::<bool>(),
            flip in 0usize..36,
            junk in proptest::prelude::any::<u8>(),
        ) {
            let text = Uuid::from_u128(id).hyphenated().to_string();
            let text = if upper { text.to_ascii_uppercase() } else { text };
            proptest::prop_assert_eq!(parse_hyphenated(text.as_bytes()), Some(id));
            let mut bytes = text.into_bytes();
            bytes[flip] = junk;
            let expected = std::str::from_utf8(&bytes).ok().and_then(|s| Uuid::try_parse(s).ok()).map(|u| u.as_u128());
            let fast = parse_hyphenated(&bytes);
            // The fast path may decline (then the uuid crate decides) but never disagrees.
            proptest::prop_assert!(fast.is_none() || fast == expected, "{fast:?} vs {expected:?}");
            proptest::prop_assert_eq!(fast.is_some(), expected.is_some() && bytes[8] == b'-' && bytes[13] == b'-' && bytes[18] == b'-' && bytes[23] == b'-');
        }
    }

    #[test]
    fn report_round_trips_through_serde() {
        let text = encode_report(&[(id(A), id(B), 2), (id(B), id(B), 40)]);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            serde_json::json!([
                {"source": A, "destination": B, "count": 2},
                {"source": B, "destination": B, "count": 40},
            ])
        );
        assert_eq!(encode_report(&[]), "[]");
    }
}
