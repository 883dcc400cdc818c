//! Property tests of `classify_set` (one `SET … NX GET` reply of
//! `lock_many`): no panic on any value; nil is taken, exactly our value is
//! recognised, another bulk string is held, an error reply is rerouted and
//! anything else is unexpected, so no reply about another holder's lease
//! counts as ours.

use proptest::prelude::*;
use redis::Value;

use super::*;
use crate::prop_values::{self, config};

const OURS: &[u8] = b"0000000000000000000000000000002a";

proptest! {
    #![proptest_config(config())]

    /// Every reply maps as documented.
    #[test]
    fn set_replies_map_as_documented(
        reply in prop_oneof![
            1 => Just(Value::BulkString(OURS.to_vec())),
            1 => Just(Value::BulkString(OURS[..OURS.len() - 1].to_vec())),
            1 => Just(Value::Nil),
            1 => prop_values::server_error(),
            3 => prop_values::value(),
        ],
    ) {
        let want = match &reply {
            Value::Nil => Found::Taken,
            Value::BulkString(b) if b == OURS => Found::Recognized,
            Value::BulkString(_) => Found::Held,
            Value::ServerError(_) => Found::Reroute,
            _ => Found::Unexpected,
        };
        prop_assert_eq!(classify_set(&reply, OURS), want);
    }
}
