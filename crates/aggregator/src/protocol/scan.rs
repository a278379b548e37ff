//! A hand-written scanner for the message frame every deployed server sends:
//! `{"source":"<uuid>","destination":"<uuid>",…}` (or the two ids the other way round),
//! compact, with the other members flat and unescaped.
//!
//! serde_json spends most of a message's parse cost on generic machinery (field identifiers,
//! string scanning, value skipping); this reads the two ids at fixed offsets and checks the
//! rest byte by byte. It never rejects: it either returns the ids serde_json would return for
//! `MessageWire`, or `None` for anything it is not sure about (escapes, whitespace inside the
//! object, nested values, a repeated id key, other key orders, any syntax error), and the
//! caller asks serde_json. So the parser accepts and rejects exactly what serde_json does.
use super::{Id, parse_hyphenated, splat};

/// `"source":"`, the key and the opening quote of its value.
const SOURCE: &[u8] = b"\"source\":\"";
/// `"destination":"`, likewise.
const DESTINATION: &[u8] = b"\"destination\":\"";

/// `(source, destination)` of a common-shape message frame, or `None` to leave the frame to
/// serde_json.
#[inline]
pub(super) fn message(text: &str) -> Option<(Id, Id)> {
    let object = trim(text.as_bytes());
    let rest = object.strip_prefix(b"{")?;
    let (source, destination, rest) = if let Some(r) = rest.strip_prefix(SOURCE) {
        let (source, r) = id(r)?;
        let (destination, r) = id(r.strip_prefix(b",")?.strip_prefix(DESTINATION)?)?;
        (source, destination, r)
    } else {
        let (destination, r) = id(rest.strip_prefix(DESTINATION)?)?;
        let (source, r) = id(r.strip_prefix(b",")?.strip_prefix(SOURCE)?)?;
        (source, destination, r)
    };
    other_members(rest)?;
    Some((source, destination))
}

/// Whitespace as JSON (and serde_json) defines it: not form feed, unlike
/// `u8::is_ascii_whitespace`.
fn is_json_space(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\t' | b'\r')
}

/// `b` without the leading and trailing whitespace serde_json skips around a value.
fn trim(mut b: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = b
        && is_json_space(*first)
    {
        b = rest;
    }
    while let [rest @ .., last] = b
        && is_json_space(*last)
    {
        b = rest;
    }
    b
}

/// A 36-byte hyphenated UUID and its closing quote. Hex digits and hyphens only, so the value
/// has no escape and no quote inside; other spellings go to serde_json (and the uuid crate).
fn id(b: &[u8]) -> Option<(Id, &[u8])> {
    let id = parse_hyphenated(b.get(..36)?)?;
    Some((id, b.get(36..)?.strip_prefix(b"\"")?))
}

/// Checks that `b` is the end of a flat object: `}` or `,"key":value` repeated, then `}`, and
/// nothing after it (the caller trimmed trailing whitespace). These members are the fields
/// `MessageWire` ignores, so a repeated `source` or `destination` (serde_json: "duplicate
/// field") is left to serde_json.
fn other_members(mut b: &[u8]) -> Option<()> {
    loop {
        match b {
            [b'}'] => return Some(()),
            [b',', b'"', rest @ ..] => {
                let (key, rest) = string(rest)?;
                if key == b"source" || key == b"destination" {
                    return None;
                }
                b = value(rest.strip_prefix(b":")?)?;
            }
            _ => return None,
        }
    }
}

/// The contents of a string whose opening quote is consumed, and what follows its closing
/// quote. `None` on an escape or a control character (serde_json rejects the latter; the
/// former it decodes, which is not worth doing here).
fn string(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = string_end(b)?;
    (b[end] == b'"').then(|| (&b[..end], &b[end + 1..]))
}

/// Index of the first `"`, `\` or control byte of `b`, eight bytes per step.
#[inline]
fn string_end(b: &[u8]) -> Option<usize> {
    // Bytes of `v` that are zero / below `n` get their high bit set. Borrows can also mark
    // bytes *after* a true hit, never before one, so the lowest mark (the first byte, as
    // words are read little-endian) is exact.
    let zero = |v: u64| v.wrapping_sub(splat(1)) & !v & splat(0x80);
    let below = |v: u64, n: u8| v.wrapping_sub(splat(n)) & !v & splat(0x80);
    let mut at = 0;
    while let Some(chunk) = b.get(at..at + 8) {
        let x = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        let hits = zero(x ^ splat(b'"')) | zero(x ^ splat(b'\\')) | below(x, 0x20);
        if hits != 0 {
            return Some(at + (hits.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    b[at..].iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20).map(|p| at + p)
}

/// What follows one scalar JSON value (string, number, `true`, `false`, `null`), as
/// serde_json's `ignore_value` reads them. Objects and arrays are left to serde_json.
fn value(b: &[u8]) -> Option<&[u8]> {
    match b.first()? {
        b'"' => string(&b[1..]).map(|(_, rest)| rest),
        b't' => b.strip_prefix(b"true"),
        b'f' => b.strip_prefix(b"false"),
        b'n' => b.strip_prefix(b"null"),
        b'-' | b'0'..=b'9' => number(b),
        _ => None,
    }
}

/// What follows a JSON number: `-`? (`0` | `[1-9][0-9]*`) (`.` `[0-9]+`)? (`[eE]` `[+-]`?
/// `[0-9]+`)?. A longer run such as `01` stops early and the caller then finds no `,` or `}`.
fn number(b: &[u8]) -> Option<&[u8]> {
    let digits = |from: usize| from + b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let mut i = usize::from(b[0] == b'-');
    i = match b.get(i)? {
        b'0' => i + 1,
        b'1'..=b'9' => digits(i + 1),
        _ => return None,
    };
    if b.get(i) == Some(&b'.') {
        let end = digits(i + 1);
        if end == i + 1 {
            return None;
        }
        i = end;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        let end = digits(i);
        if end == i {
            return None;
        }
        i = end;
    }
    Some(&b[i..])
}

#[cfg(test)]
mod tests;
