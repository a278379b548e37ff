//! Shared-secret checks (control agents, the tracker reports API, presence clients).

/// Whether `presented` equals `expected`, compared without an early exit so the response time
/// does not reveal how much of a guess matched. The length of `expected` is not secret.
pub fn token_matches(presented: &str, expected: &str) -> bool {
    let (a, b) = (presented.as_bytes(), expected.as_bytes());
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    diff == 0 && a.len() == b.len()
}

#[cfg(test)]
mod tests {
    use super::token_matches;

    #[test]
    fn only_the_exact_token_matches() {
        assert!(token_matches("secret", "secret"));
        for wrong in ["", "s", "secreT", "secret ", "secretsecret"] {
            assert!(!token_matches(wrong, "secret"), "{wrong:?}");
        }
    }
}
