//! Correlation tokens: 128 bits that name one held request and the node holding it.
//!
//! The token is minted *before* the job is started upstream and travels inside the callback
//! URL, so a callback can be matched even when it beats the start response. The top 16 bits
//! are the minting node's `--node-id`, so a node that receives a callback for another node's
//! token knows where to forward it; the other 112 bits come from a CSPRNG and make tokens
//! unguessable: a forged callback has to guess one of the held tokens.
use std::fmt;
use std::str::FromStr;

/// A 128-bit correlation token, shown as 32 lower-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token(u128);

/// Bits of a token below its node id.
const RANDOM_BITS: u32 = 112;

impl Token {
    /// A fresh token of node 0 (a single node).
    #[cfg(test)]
    pub fn mint() -> Self {
        Self::mint_on(0)
    }

    /// A fresh token held by `node` (random bits from the thread-local CSPRNG).
    pub fn mint_on(node: u16) -> Self {
        Self((u128::from(node) << RANDOM_BITS) | (rand::random::<u128>() >> (128 - RANDOM_BITS)))
    }

    /// The node that minted (and holds) this token.
    pub fn node(self) -> u16 {
        u16::try_from(self.0 >> RANDOM_BITS).unwrap_or(u16::MAX)
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
    fn tokens_name_their_node() {
        for node in [0, 1, 7, u16::MAX] {
            let (a, b) = (Token::mint_on(node), Token::mint_on(node));
            assert_eq!((a.node(), b.node()), (node, node));
            assert_ne!(a, b);
            assert_eq!(a.to_string().parse::<Token>().unwrap().node(), node);
        }
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        for bad in ["", "abc", "+0000000000000000000000000000000", &"g".repeat(32), &"0".repeat(33)]
        {
            assert_eq!(bad.parse::<Token>(), Err(BadToken), "{bad:?}");
        }
    }
}
