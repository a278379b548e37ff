//! Correlation tokens: 128 random bits that name one held request.
//!
//! The token is minted *before* the job is started upstream and travels inside the callback
//! URL, so a callback can be matched even when it beats the start response. 128 bits from a
//! CSPRNG make tokens unguessable: a forged callback has to guess one of the held tokens.
use std::fmt;
use std::str::FromStr;

/// A 128-bit correlation token, shown as 32 lower-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token(u128);

impl Token {
    /// A fresh random token (thread-local CSPRNG).
    pub fn mint() -> Self {
        Self(rand::random())
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// The text is not 32 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadToken;

impl FromStr for Token {
    type Err = BadToken;

    fn from_str(s: &str) -> Result<Self, BadToken> {
        // from_str_radix alone would accept a sign and shorter strings.
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(BadToken);
        }
        u128::from_str_radix(s, 16).map(Self).map_err(|_| BadToken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_differ() {
        let a = Token::mint();
        let b = Token::mint();
        assert_ne!(a, b);
        let text = a.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(text.parse::<Token>(), Ok(a));
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        for bad in ["", "abc", "+0000000000000000000000000000000", &"g".repeat(32), &"0".repeat(33)]
        {
            assert_eq!(bad.parse::<Token>(), Err(BadToken), "{bad:?}");
        }
    }
}
