//! Subjects and subject patterns, with NATS semantics.
//!
//! A subject is a dot-separated list of non-empty tokens (`tracker.events.view`). A pattern may
//! also use `*` (exactly one token) and, as its last token, `>` (one or more tokens).
//! Both engines validate with these rules so bad input gets the same clear error everywhere;
//! the memory engine also routes with [`matches`] and rejects overlapping streams with
//! [`overlaps`], as JetStream does.
use crate::{Error, Result};

/// Checks a subject to publish on: no wildcards, no empty tokens, no whitespace.
///
/// # Errors
/// [`Error::InvalidSubject`] naming the problem.
pub(crate) fn validate_subject(subject: &str) -> Result<()> {
    validate(subject, false)
}

/// Checks a subscription or stream pattern: like a subject, plus `*` tokens and a final `>`.
///
/// # Errors
/// [`Error::InvalidSubject`] naming the problem.
pub(crate) fn validate_pattern(pattern: &str) -> Result<()> {
    validate(pattern, true)
}

fn validate(s: &str, wildcards: bool) -> Result<()> {
    let bad = |why: &str| Err(Error::InvalidSubject(format!("{s:?}: {why}")));
    if s.is_empty() {
        return bad("empty");
    }
    if s.chars().any(char::is_whitespace) {
        return bad("contains whitespace");
    }
    let count = s.split('.').count();
    for (i, token) in s.split('.').enumerate() {
        match token {
            "" => return bad("empty token"),
            "*" | ">" if !wildcards => return bad("wildcards are not allowed here"),
            ">" if i + 1 != count => return bad("'>' must be the last token"),
            t if t.len() > 1 && (t.contains('*') || t.contains('>')) => {
                return bad("wildcards must be whole tokens");
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether the (valid) `pattern` matches the (valid) `subject`.
pub(crate) fn matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for p in pattern.split('.') {
        match (p, subject_tokens.next()) {
            (">", Some(_)) => return true,
            (_, None) => return false,
            ("*", Some(_)) => {}
            (p, Some(s)) if p == s => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

/// Whether some subject matches both (valid) patterns.
pub(crate) fn overlaps(a: &str, b: &str) -> bool {
    let mut a_tokens = a.split('.');
    let mut b_tokens = b.split('.');
    loop {
        match (a_tokens.next(), b_tokens.next()) {
            (None, None) => return true,
            (None, Some(_)) | (Some(_), None) => return false,
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some("*"), Some(_)) | (Some(_), Some("*")) => {}
            (Some(x), Some(y)) if x == y => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_patterns_match_only_themselves() {
        assert!(matches("a.b.c", "a.b.c"));
        assert!(!matches("a.b.c", "a.b"));
        assert!(!matches("a.b", "a.b.c"));
        assert!(!matches("a.b.c", "a.b.d"));
        assert!(!matches("a.bb", "a.b"));
    }

    #[test]
    fn star_matches_exactly_one_token() {
        assert!(matches("a.*.c", "a.b.c"));
        assert!(matches("a.*.c", "a.xyz.c"));
        assert!(!matches("a.*.c", "a.c"));
        assert!(!matches("a.*.c", "a.b.b.c"));
        assert!(matches("*", "a"));
        assert!(!matches("*", "a.b"));
        assert!(matches("*.*", "a.b"));
    }

    #[test]
    fn tail_matches_one_or_more_tokens() {
        assert!(matches("a.>", "a.b"));
        assert!(matches("a.>", "a.b.c.d"));
        assert!(!matches("a.>", "a"));
        assert!(!matches("a.>", "b.c"));
        assert!(matches(">", "anything.at.all"));
        assert!(matches("*.b.>", "x.b.c"));
        assert!(!matches("*.b.>", "x.c.c"));
    }

    #[test]
    fn validation_rejects_malformed_subjects() {
        for ok in ["a", "a.b", "tracker.events.view", "a-b_c.9"] {
            assert!(validate_subject(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "a.", ".a", "a..b", "a b", "a.*", "a.>", "a\tb"] {
            assert!(validate_subject(bad).is_err(), "{bad:?}");
        }
        for ok in ["a.*", "a.>", ">", "*.*.>", "a.*.c"] {
            assert!(validate_pattern(ok).is_ok(), "{ok}");
        }
        for bad in ["a.>.b", "a*", "a.b>", "*x.b", "", "a..>"] {
            let err = validate_pattern(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidSubject(_)), "{bad:?}: {err}");
        }
    }

    /// Every pattern of up to `len` tokens over `a`, `b`, `*` (and `>` last).
    fn all_patterns(len: usize) -> Vec<String> {
        let mut out: Vec<Vec<&str>> = vec![vec![]];
        let mut all = Vec::new();
        for _ in 0..len {
            let mut next = Vec::new();
            for prefix in &out {
                for t in ["a", "b", "*", ">"] {
                    let mut p = prefix.clone();
                    p.push(t);
                    all.push(p.join("."));
                    if t != ">" {
                        next.push(p);
                    }
                }
            }
            out = next;
        }
        all
    }

    /// Every subject of up to `len` tokens over `a`, `b`, `c`.
    fn all_subjects(len: usize) -> Vec<String> {
        let mut level = vec![String::new()];
        let mut all = Vec::new();
        for _ in 0..len {
            level = level
                .iter()
                .flat_map(|p| {
                    ["a", "b", "c"]
                        .map(|t| if p.is_empty() { t.into() } else { format!("{p}.{t}") })
                })
                .collect();
            all.extend(level.iter().cloned());
        }
        all
    }

    #[test]
    fn overlap_agrees_with_an_exhaustive_search_for_a_common_subject() {
        let patterns = all_patterns(3);
        let subjects = all_subjects(4);
        assert_eq!(patterns.len(), 4 + 12 + 36);
        for p in &patterns {
            validate_pattern(p).expect(p);
        }
        for a in &patterns {
            for b in &patterns {
                let witness = subjects.iter().find(|s| matches(a, s) && matches(b, s));
                assert_eq!(overlaps(a, b), witness.is_some(), "{a} vs {b}: witness {witness:?}");
            }
        }
    }

    #[test]
    fn overlap_is_symmetric_and_exact() {
        let cases = [
            ("a.b", "a.b", true),
            ("a.b", "a.c", false),
            ("a.*", "a.b", true),
            ("a.*", "*.b", true),
            ("a.*", "a.b.c", false),
            ("a.>", "a.b.c", true),
            ("a.>", "a", false),
            (">", "x", true),
            ("a.*.c", "a.b.>", true),
            ("a.*.c", "b.>", false),
        ];
        for (a, b, want) in cases {
            assert_eq!(overlaps(a, b), want, "{a} vs {b}");
            assert_eq!(overlaps(b, a), want, "{b} vs {a}");
        }
    }
}
