//! Lease tokens and fencing tokens.

use std::fmt;
use std::num::NonZeroU64;

/// A fencing token: strictly increasing per resource across acquisitions
/// (see the crate docs for the exact claim). Pass it to the resource the
/// lock protects and have the resource refuse any token lower than one it
/// has already seen; that, not the lock alone, is what keeps a stale
/// holder (paused, partitioned, or whose lease was lost at a failover) from
/// doing harm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(NonZeroU64);

impl FencingToken {
    pub(crate) fn new(value: NonZeroU64) -> FencingToken {
        FencingToken(value)
    }

    /// The token as a number.
    pub fn get(self) -> u64 {
        self.0.get()
    }
}

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A fresh 128-bit token from a cryptographically secure generator (the
/// thread-local ChaCha generator of `rand`, seeded by the OS): a client that
/// did not acquire a lease cannot guess its token.
pub(crate) fn new_token() -> u128 {
    rand::random()
}

/// The value stored in the lock key: the token in 32 hex digits, followed
/// by `.<fence>` for fenced leases.
pub(crate) fn lock_value(token: u128, fence: Option<FencingToken>) -> String {
    match fence {
        None => format!("{token:032x}"),
        Some(fence) => format!("{token:032x}.{fence}"),
    }
}

/// The start of every value `token` stores when fenced, whatever the fence:
/// `<token>.`.
pub(crate) fn lock_value_prefix(token: u128) -> String {
    format!("{token:032x}.")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values are fixed-width hex, with the fence after a dot.
    #[test]
    fn lock_values() {
        assert_eq!(lock_value(0xab, None), "000000000000000000000000000000ab");
        let fence = FencingToken::new(NonZeroU64::new(1_700_000_000_000_001).unwrap());
        assert_eq!(
            lock_value(u128::MAX, Some(fence)),
            "ffffffffffffffffffffffffffffffff.1700000000000001"
        );
    }

    /// Tokens do not repeat (a smoke check of the generator wiring).
    #[test]
    fn tokens_differ() {
        let tokens: std::collections::HashSet<u128> = (0..10_000).map(|_| new_token()).collect();
        assert_eq!(tokens.len(), 10_000);
    }
}
