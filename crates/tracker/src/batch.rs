//! Request bodies: gzip or plain, one object, a JSON array, or NDJSON — decoded within limits
//! and validated as a whole (a batch is accepted entirely or not at all, so a client can fix
//! and resend it without creating duplicates).
use std::io::Read;

use bytes::Bytes;
use serde_json::Value;

use crate::event::{Event, Validator};
use crate::rejection::Rejection;

/// Size limits of one request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest body, in bytes, after decompression.
    pub max_body_bytes: usize,
    /// Most events in one request.
    pub max_events: usize,
}

/// Decompresses `body` according to `Content-Encoding`, refusing more than `limit` bytes out
/// (a gzip bomb is cut off, not inflated).
///
/// # Errors
/// [`Rejection::UnsupportedEncoding`], [`Rejection::TooLarge`], [`Rejection::Malformed`].
pub fn decompress(encoding: Option<&str>, body: Bytes, limit: usize) -> Result<Bytes, Rejection> {
    match encoding.map(str::trim) {
        None | Some("" | "identity") => {
            if body.len() > limit {
                return Err(Rejection::TooLarge { limit });
            }
            Ok(body)
        }
        Some(enc) if enc.eq_ignore_ascii_case("gzip") => {
            let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit + 1));
            let decoder = flate2::read::GzDecoder::new(&body[..]);
            decoder
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| Rejection::Malformed(format!("gzip: {e}")))?;
            if out.len() > limit {
                return Err(Rejection::TooLarge { limit });
            }
            Ok(out.into())
        }
        Some(other) => Err(Rejection::UnsupportedEncoding(other.to_owned())),
    }
}

/// Parses a batch body: a JSON array of events, or NDJSON (one event per line; a single
/// object is a one-line NDJSON body).
///
/// # Errors
/// [`Rejection::Malformed`] (not JSON, or empty) or [`Rejection::TooManyEvents`].
pub fn parse_batch(body: &[u8], max_events: usize) -> Result<Vec<Value>, Rejection> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let values = match first {
        None => return Err(Rejection::Malformed("no event in body".to_owned())),
        Some(b'[') => match serde_json::from_slice::<Value>(body) {
            Ok(Value::Array(items)) => items,
            Ok(_) => return Err(Rejection::Malformed("expected a JSON array".to_owned())),
            Err(e) => return Err(Rejection::Malformed(e.to_string())),
        },
        Some(_) => {
            let mut items = Vec::new();
            for (i, item) in
                serde_json::Deserializer::from_slice(body).into_iter::<Value>().enumerate()
            {
                let item = item.map_err(|e| Rejection::Malformed(format!("event {i}: {e}")))?;
                items.push(item);
                if items.len() > max_events {
                    break;
                }
            }
            items
        }
    };
    if values.is_empty() {
        return Err(Rejection::Malformed("no event in body".to_owned()));
    }
    if values.len() > max_events {
        return Err(Rejection::TooManyEvents { max: max_events });
    }
    Ok(values)
}

/// Parses a single-event body (`POST /track`).
///
/// # Errors
/// [`Rejection::Malformed`] when the body is not one JSON value.
pub fn parse_single(body: &[u8]) -> Result<Vec<Value>, Rejection> {
    serde_json::from_slice::<Value>(body)
        .map(|v| vec![v])
        .map_err(|e| Rejection::Malformed(e.to_string()))
}

/// Validates every value; all-or-nothing.
///
/// # Errors
/// [`Rejection::Invalid`] listing every problem of every event.
pub fn validate(values: &[Value], validator: &Validator) -> Result<Vec<Event>, Rejection> {
    let mut problems = Vec::new();
    let mut events = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        if let Some(ev) = validator.check(i, v, &mut problems) {
            events.push(ev);
        }
    }
    if problems.is_empty() { Ok(events) } else { Err(Rejection::Invalid(problems)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Bytes {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap().into()
    }

    #[test]
    fn array_and_ndjson_parse_to_the_same_values() {
        let array = parse_batch(br#" [{"a":1}, {"a":2}] "#, 10).unwrap();
        let nd = parse_batch(b"{\"a\":1}\n\n{\"a\":2}\r\n", 10).unwrap();
        assert_eq!(array, nd);
        assert_eq!(array.len(), 2);
    }

    #[test]
    fn empty_malformed_and_too_many_are_refused() {
        assert!(matches!(parse_batch(b"  \n", 10), Err(Rejection::Malformed(_))));
        assert!(matches!(parse_batch(b"[]", 10), Err(Rejection::Malformed(_))));
        assert!(matches!(parse_batch(b"[{", 10), Err(Rejection::Malformed(_))));
        let Err(Rejection::Malformed(why)) = parse_batch(b"{\"a\":1}\n{oops}", 10) else {
            panic!("expected malformed");
        };
        assert!(why.starts_with("event 1:"), "{why}");
        assert!(matches!(parse_batch(b"[1,2,3]", 2), Err(Rejection::TooManyEvents { max: 2 })));
        assert!(matches!(parse_batch(b"1\n2\n3", 2), Err(Rejection::TooManyEvents { max: 2 })));
    }

    #[test]
    fn gzip_is_inflated_within_the_limit() {
        let plain = b"[{\"a\":1}]".repeat(10);
        assert_eq!(decompress(Some("gzip"), gzip(&plain), 1000).unwrap(), plain);
        assert_eq!(decompress(None, plain.clone().into(), 1000).unwrap(), plain);
        // A small gzip body that inflates past the limit is cut off.
        let bomb = gzip(&vec![b' '; 1_000_000]);
        assert!(bomb.len() < 10_000);
        assert!(matches!(decompress(Some("gzip"), bomb, 1000), Err(Rejection::TooLarge { .. })));
        assert!(matches!(decompress(None, plain.into(), 10), Err(Rejection::TooLarge { .. })));
        assert!(matches!(
            decompress(Some("gzip"), Bytes::from_static(b"nope"), 10),
            Err(Rejection::Malformed(_))
        ));
        assert!(matches!(
            decompress(Some("br"), Bytes::new(), 10),
            Err(Rejection::UnsupportedEncoding(_))
        ));
    }

    proptest::proptest! {
        #![proptest_config(switchboard_testkit::fuzz::config())]

        /// Whatever arrives, plain or gzip-wrapped: an answer (accepted or refused), never a
        /// panic, never more than the limits in memory or in events.
        #[test]
        fn fuzz_collector_parsers(
            body in switchboard_testkit::fuzz::inputs(switchboard_testkit::fuzz::corpus(
                concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus"))),
            gzipped in proptest::bool::ANY,
        ) {
            let (limit, max_events) = (4096, 8);
            let raw = if gzipped { gzip(&body) } else { Bytes::from(body.clone()) };
            let encoding = gzipped.then_some("gzip");
            let validator = crate::event::Validator::new(
                std::sync::Arc::new(switchboard_core::ManualClock::new(1_700_000_000_000)), None, 300_000);
            if let Ok(plain) = decompress(encoding, raw, limit) {
                proptest::prop_assert!(plain.len() <= limit);
                let parsed = [parse_batch(&plain, max_events), parse_single(&plain)];
                for values in parsed.into_iter().flatten() {
                    proptest::prop_assert!(values.len() <= max_events.max(1));
                    if let Ok(events) = validate(&values, &validator) {
                        proptest::prop_assert_eq!(events.len(), values.len());
                    }
                }
            }
        }
    }
}
