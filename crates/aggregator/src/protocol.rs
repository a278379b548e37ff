//! The aggregator ↔ wsserver wire contract (JSON text frames), parsed without per-message
//! allocation.
//!
//! A frame is classified by its first non-whitespace byte: `[` is an association list,
//! `{` is one message. Messages are the hot path: the common compact shape is read by a
//! hand-written scanner ([`scan`]) that takes only frames serde_json would accept with the same
//! ids; every other message frame is deserialized by serde_json from the borrowed text straight
//! into 128-bit keys. Either way no `String` is built per message (serde_json on borrowed `&str`
//! measured faster than simd-json on ~150-byte frames). Association lists are
//! rare but can be large (up to `--max-children` entries, ~100 MB): the list is checked once
//! without allocating, then walked entry by entry straight into the caller, so no second copy
//! of it (a `Vec` of entries or pairs) is ever built. One bad entry is skipped and counted
//! instead of costing the whole list.
//!
//! Size limits come from [`FrameLimits`], the one place they are derived from the flags.
use std::fmt::{self, Write as _};

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;
use uuid::Uuid;

mod scan;

/// A service id (parent or child) as its 128-bit UUID value.
pub(crate) type Id = u128;

/// Bytes one child can take in an association list: the widest entry per child is
/// `{"parent":"<36>","child":"<36>"},` (~95 bytes); the rest is room for whitespace.
pub(crate) const ASSOCIATION_BYTES_PER_CHILD: usize = 128;

/// Room for an association list's brackets and padding beyond its entries.
const ASSOCIATION_SLACK: usize = 64 << 10;

/// The size limits of incoming frames, all derived here from two flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameLimits {
    /// Message frames (`{…}`) larger than this are skipped: `--max-frame-bytes`.
    pub(crate) message_bytes: usize,
    /// Association lists (`[…]`) larger than this are refused: what `--max-children`
    /// children can take on the wire, so a list the association map accepts always fits.
    pub(crate) association_bytes: usize,
}

impl FrameLimits {
    /// The limits for `--max-frame-bytes` and `--max-children`.
    pub(crate) fn new(max_frame_bytes: usize, max_children: usize) -> Self {
        let association_bytes = max_children
            .saturating_mul(ASSOCIATION_BYTES_PER_CHILD)
            .saturating_add(ASSOCIATION_SLACK)
            .max(max_frame_bytes);
        Self { message_bytes: max_frame_bytes, association_bytes }
    }

    /// The websocket layer's cap on one message (and one frame of it): the largest frame either
    /// limit allows, so everything the parser would accept reaches it, and nothing larger is
    /// buffered (such a frame costs the connection; the session reports it as lost loudly).
    pub(crate) fn websocket_bytes(&self) -> usize {
        self.message_bytes.max(self.association_bytes)
    }
}

/// One decoded frame from the server.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    /// `[{"parent":…,"child":…}, …]`: an association update (checked to be a JSON array).
    Associations(AssociationList<'a>),
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
    /// A message frame larger than `--max-frame-bytes`.
    #[error("message frame of {0} bytes exceeds --max-frame-bytes")]
    Oversized(usize),
    /// An association list larger than `--max-children` children can take.
    #[error("association list of {0} bytes exceeds what --max-children allows")]
    AssociationsOversized(usize),
    /// Not valid JSON for its kind, or an id is not a UUID.
    #[error("invalid frame")]
    Invalid(#[from] serde_json::Error),
}

impl FrameError {
    /// Metric label for this rejection.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::UnknownKind(_) => "unknown_kind",
            Self::Oversized(_) => "oversized",
            Self::AssociationsOversized(_) => "associations_oversized",
            Self::Invalid(_) => "invalid",
        }
    }
}

/// Parses one text frame within `limits`.
pub(crate) fn parse<'a>(text: &'a str, limits: &FrameLimits) -> Result<Frame<'a>, FrameError> {
    match text.bytes().find(|b| !b.is_ascii_whitespace()) {
        None => Err(FrameError::Empty),
        Some(b'{') => {
            if text.len() > limits.message_bytes {
                return Err(FrameError::Oversized(text.len()));
            }
            let (source, destination) = match scan::message(text) {
                Some(ids) => ids,
                None => message_by_serde(text)?,
            };
            Ok(Frame::Message { source, destination })
        }
        Some(b'[') => {
            if text.len() > limits.association_bytes {
                return Err(FrameError::AssociationsOversized(text.len()));
            }
            // An array of anything, checked without allocating (a Vec of a zero-sized type).
            serde_json::from_str::<Vec<de::IgnoredAny>>(text)?;
            Ok(Frame::Associations(AssociationList(text)))
        }
        Some(b) => Err(FrameError::UnknownKind(char::from(b))),
    }
}

/// A message frame's `(source, destination)` through serde_json: everything the scanner
/// declines, and the reference it is tested against.
fn message_by_serde(text: &str) -> Result<(Id, Id), serde_json::Error> {
    let m: MessageWire = serde_json::from_str(text)?;
    Ok((m.source.0, m.destination.0))
}

/// An association list known to be a JSON array; its entries are read by
/// [`AssociationList::for_each`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct AssociationList<'a>(&'a str);

impl AssociationList<'_> {
    /// Calls `apply(parent, child)` for every pair, in frame order (a later pair for a child
    /// wins); returns how many entries were not valid associations and were skipped.
    pub(crate) fn for_each(&self, mut apply: impl FnMut(Id, Id)) -> usize {
        let mut de = serde_json::Deserializer::from_str(self.0);
        // Cannot fail: `parse` checked that the text is an array.
        de.deserialize_seq(EachEntry(&mut apply)).unwrap_or(0)
    }
}

/// Walks an array, parsing each element as an entry on its own.
struct EachEntry<'f, F>(&'f mut F);

impl<'de, F: FnMut(Id, Id)> Visitor<'de> for EachEntry<'_, F> {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of associations")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        let mut skipped = 0;
        while let Some(entry) = seq.next_element::<&RawValue>()? {
            match serde_json::from_str::<EntryWire>(entry.get()) {
                Ok(e) => e.child.0.iter().for_each(|&c| (self.0)(e.parent.0, c)),
                Err(_) => skipped += 1,
            }
        }
        Ok(skipped)
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

/// Each byte of a `u64` set to `b`.
const fn splat(b: u8) -> u64 {
    u64::from_ne_bytes([b; 8])
}

/// The high bit of every byte of `x` that lies strictly between `lo` and `hi`; every byte of
/// `x` must be below 0x80 and `hi` at most 0x80 (the classic SWAR range test, no carries
/// between bytes under those conditions).
#[inline(always)]
const fn bytes_between(x: u64, lo: u8, hi: u8) -> u64 {
    let low7 = x & splat(0x7f);
    (splat(127 + hi) - low7) & !x & (low7 + splat(127 - lo)) & splat(0x80)
}

/// Eight ASCII hex digits, big-endian in `x` (the first digit in the top byte), as a `u32`;
/// `None` if any byte is not a hex digit. Eight digits at once instead of a lookup per digit.
#[inline(always)]
const fn hex8(x: u64) -> Option<u64> {
    let digit = bytes_between(x, b'0' - 1, b'9' + 1);
    let alpha = bytes_between(x | splat(0x20), b'a' - 1, b'f' + 1);
    if x & splat(0x80) != 0 || (digit | alpha) != splat(0x80) {
        return None;
    }
    // '0'..'9' are 0x30..0x39, 'a'..'f' / 'A'..'F' are 0x61.. / 0x41..: the low nibble plus 9
    // for letters (bit 6 set) is the digit's value.
    let v = (x & splat(0x0f)) + ((x >> 6) & splat(0x01)) * 9;
    // Pack the eight nibbles: pairs into bytes, bytes into halves, halves into one word.
    let v = ((v >> 4) | v) & 0x00ff_00ff_00ff_00ff;
    let v = ((v >> 8) | v) & 0x0000_ffff_0000_ffff;
    Some(((v >> 16) | v) & 0xffff_ffff)
}

/// The hot-path UUID parser for the canonical hyphenated form
/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`: four 8-digit groups decoded as words. Other
/// spellings return `None` and go to the uuid crate.
#[inline]
fn parse_hyphenated(b: &[u8]) -> Option<Id> {
    let b: &[u8; 36] = b.try_into().ok()?;
    if b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
        return None;
    }
    // Constant offsets into a 36-byte array: the conversions cannot fail and compile to loads.
    let word = |at: usize| u64::from_be_bytes(b[at..at + 8].try_into().unwrap_or_default());
    let half =
        |at: usize| u64::from(u32::from_be_bytes(b[at..at + 4].try_into().unwrap_or_default()));
    let g0 = hex8(word(0))?;
    let g1 = hex8((half(9) << 32) | half(14))?;
    let g2 = hex8((half(19) << 32) | half(24))?;
    let g3 = hex8(word(28))?;
    let hi = (g0 << 32) | g1;
    let lo = (g2 << 32) | g3;
    Some((Id::from(hi) << 64) | Id::from(lo))
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

    fn limits(bytes: usize) -> FrameLimits {
        FrameLimits { message_bytes: bytes, association_bytes: bytes }
    }

    /// The pairs and skipped entries of an association list.
    fn pairs(text: &str) -> (Vec<(Id, Id)>, usize) {
        let Frame::Associations(list) = parse(text, &limits(1 << 20)).unwrap() else {
            panic!("not an association list: {text}")
        };
        let mut pairs = Vec::new();
        let skipped = list.for_each(|p, c| pairs.push((p, c)));
        (pairs, skipped)
    }

    #[test]
    fn message_with_extra_fields_and_padding() {
        let text = format!(
            " \n\t{{\"source\":\"{A}\",\"destination\":\"{B}\",\"method\":\"GET\",\"path\":\"/list\",\"httpStatus\":400}}\n"
        );
        assert_eq!(
            parse(&text, &limits(1024)).unwrap(),
            Frame::Message { source: id(A), destination: id(B) }
        );
    }

    #[test]
    fn associations_accept_child_children_and_lists() {
        let text = format!(
            "\t[{{\"parent\":\"{A}\",\"child\":\"{B}\"}}, {{\"parent\":\"{B}\",\"children\":\"{A}\"}},\n {{\"parent\":\"{A}\",\"children\":[\"{A}\",\"{B}\"]}}]"
        );
        let (pairs, skipped) = self::pairs(&text);
        assert_eq!(skipped, 0);
        assert_eq!(pairs, vec![(id(A), id(B)), (id(B), id(A)), (id(A), id(A)), (id(A), id(B))]);
    }

    #[test]
    fn bad_entries_are_skipped_one_by_one() {
        let text = format!(
            "[{{\"parent\":\"nope\",\"child\":\"{B}\"}},{{\"parent\":\"{A}\"}},7,{{\"parent\":\"{A}\",\"child\":\"{B}\"}}]"
        );
        assert_eq!(pairs(&text), (vec![(id(A), id(B))], 3));
    }

    #[test]
    fn malformed_frames_are_errors_with_reasons() {
        let cases = [
            ("   ", "empty"),
            ("hello", "unknown_kind"),
            ("{\"source\":1}", "invalid"),
            ("{\"source\":\"x\",\"destination\":\"y\"}", "invalid"),
            ("[{", "invalid"),
            ("[1,2,", "invalid"),
            ("[] []", "invalid"),
            ("{\"source\":", "invalid"),
        ];
        for (text, reason) in cases {
            assert_eq!(parse(text, &limits(1024)).unwrap_err().reason(), reason, "{text:?}");
        }
        let big = format!("{{\"source\":\"{A}\",\"destination\":\"{B}\"}}");
        assert_eq!(parse(&big, &limits(10)).unwrap_err().reason(), "oversized");
        let list = format!("[{{\"parent\":\"{A}\",\"child\":\"{B}\"}}]");
        assert_eq!(parse(&list, &limits(10)).unwrap_err().reason(), "associations_oversized");
    }

    #[test]
    fn limits_derive_from_max_children() {
        let l = FrameLimits::new(64 << 10, 1_000_000);
        assert_eq!(l.message_bytes, 64 << 10);
        assert_eq!(l.association_bytes, 1_000_000 * ASSOCIATION_BYTES_PER_CHILD + (64 << 10));
        assert_eq!(l.websocket_bytes(), l.association_bytes);
        // A message limit above the children's is never undercut by the websocket cap.
        let l = FrameLimits::new(1 << 30, 10);
        assert_eq!(l.websocket_bytes(), 1 << 30);
    }

    #[test]
    fn the_widest_entry_per_child_fits_the_derived_limit() {
        // max_children entries of the widest form, pretty-printed, fit in association_bytes.
        let n = 1_000;
        let entry = format!("  {{ \"parent\": \"{A}\", \"children\": \"{B}\" }},\n");
        let text = format!("[\n{}  7\n]", entry.repeat(n));
        assert!(text.len() <= FrameLimits::new(1024, n).association_bytes, "{}", text.len());
        assert_eq!(pairs(&text).0.len(), n);
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
    fn every_byte_at_every_position_is_judged_like_the_uuid_crate() {
        let good =
            Uuid::from_u128(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210).hyphenated().to_string();
        assert_eq!(
            parse_hyphenated(good.as_bytes()),
            Some(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210)
        );
        for pos in 0..36 {
            for byte in 0..=255u8 {
                let mut bytes = good.clone().into_bytes();
                bytes[pos] = byte;
                let expected = std::str::from_utf8(&bytes)
                    .ok()
                    .filter(|_| [8, 13, 18, 23].iter().all(|&h| bytes[h] == b'-'))
                    .and_then(|s| Uuid::try_parse(s).ok())
                    .map(|u| u.as_u128());
                assert_eq!(parse_hyphenated(&bytes), expected, "byte {byte:#04x} at {pos}");
            }
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
