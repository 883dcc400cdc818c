//! Property tests of `chunk_fates`: for any reply it returns exactly one
//! fate per lease of the chunk; a lease is renewed (for the chunk's TTL)
//! only where an array of exactly that many items answers `1` for it, lost
//! only where such an array answers `0`; an error text naming a key that is
//! elsewhere goes one by one (`Moved`); everything else is the shard's,
//! retried with its next batch (`Unconfirmed`), never guessed.

use proptest::prelude::*;
use redis::Value;

use super::*;
use crate::prop_values::{self, config};

/// A renewal item: `1`, `0`, an error text, or any value.
fn item() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => Just(Value::Int(1)),
        2 => Just(Value::Int(0)),
        1 => prop_values::server_error(),
        1 => prop_values::leaf(),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// One fate per lease, each as the item at its position says, and all
    /// retried when the reply is not an array of one item per lease.
    #[test]
    fn one_fate_per_lease_as_its_item_says(
        n in 0usize..40,
        ttl_ms in any::<u32>(),
        reply in prop_oneof![
            3 => proptest::collection::vec(item(), 0..40).prop_map(Value::Array),
            1 => prop_values::value(),
        ],
    ) {
        let fates = chunk_fates(n, ttl_ms, &reply);
        prop_assert_eq!(fates.len(), n);
        match &reply {
            Value::Array(items) if items.len() == n => {
                for (fate, item) in fates.iter().zip(items) {
                    match item {
                        Value::Int(1) => prop_assert!(matches!(fate, Fate::Renewed(t) if *t == ttl_ms)),
                        Value::Int(0) => prop_assert!(matches!(fate, Fate::Lost)),
                        _ => prop_assert!(
                            matches!(
                                (fate, item_error_fate(item)),
                                (Fate::Moved, Fate::Moved) | (Fate::Unconfirmed, Fate::Unconfirmed)
                            ),
                            "{item:?}"
                        ),
                    }
                }
            }
            _ => prop_assert!(fates.iter().all(|f| matches!(f, Fate::Unconfirmed))),
        }
    }
}
