//! Property tests of the acquire reply parsers `parse_set` and
//! `parse_fenced`: no panic on any value, and an acquire counts as taken
//! only on the replies that mean it (nil for `SET … NX GET`; `{1, fence}`
//! with a positive decimal fence for the fenced script), so a reply about
//! somebody else's lease is never mistaken for ours.

use proptest::prelude::*;
use redis::Value;

use super::*;
use crate::prop_values::{self, config};

/// Our lock value as `lock_value` writes it, or near misses of it.
fn value_like(ours: &'static str) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => Just(ours.as_bytes().to_vec()),
        1 => Just(ours.as_bytes()[1..].to_vec()),
        1 => Just(format!("{ours} ").into_bytes()),
        1 => Just(ours.to_uppercase().into_bytes()),
        2 => prop_values::bytes(),
    ]
}

/// A fence as the script might send it: decimal (zero, huge, signed,
/// padded) or not a number at all.
fn fence_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => any::<u64>().prop_map(|n| n.to_string().into_bytes()),
        1 => proptest::sample::select(vec![
            "0", "-3", "+7", "007", " 5", "5 ", "18446744073709551615", "18446744073709551616",
            "1e3", "", "x.5",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        1 => prop_values::bytes(),
    ]
}

const OURS: &str = "0000000000000000000000000000002a";

proptest! {
    #![proptest_config(config())]

    /// `SET … NX GET`: nil is taken, exactly our value is recognised, any
    /// other bulk string is held, anything else is an unexpected reply.
    #[test]
    fn set_replies_map_as_documented(
        reply in prop_oneof![
            2 => value_like(OURS).prop_map(Value::BulkString),
            1 => Just(Value::Nil),
            2 => prop_values::value(),
        ],
    ) {
        let got = parse_set(&reply, OURS);
        match &reply {
            Value::Nil => prop_assert!(matches!(got, Ok(Attempt::Acquired(None)))),
            Value::BulkString(b) if b == OURS.as_bytes() => {
                prop_assert!(matches!(got, Ok(Attempt::Recognized)))
            }
            Value::BulkString(_) => prop_assert!(matches!(got, Ok(Attempt::Held))),
            _ => prop_assert!(matches!(got, Err(Error::UnexpectedReply(_)))),
        }
    }

    /// The fenced script: `{1, fence}` is taken with exactly that fence when
    /// it is a positive decimal u64, `{0, anything}` is held, anything else
    /// (a zero, negative or unparsable fence included) is an unexpected
    /// reply; never a panic.
    #[test]
    fn fenced_replies_map_as_documented(
        reply in prop_oneof![
            3 => (prop_oneof![Just(0i64), Just(1), prop_values::integer()], fence_bytes())
                .prop_map(|(flag, fence)| Value::Array(vec![Value::Int(flag), Value::BulkString(fence)])),
            1 => (prop_values::value(), prop_values::value())
                .prop_map(|(a, b)| Value::Array(vec![a, b])),
            1 => prop_values::value(),
        ],
    ) {
        let got = parse_fenced(&reply);
        let items = match &reply {
            Value::Array(items) => items.as_slice(),
            _ => &[],
        };
        match items {
            [Value::Int(1), Value::BulkString(fence)] => {
                let want = std::str::from_utf8(fence)
                    .ok()
                    .and_then(|f| f.parse::<u64>().ok())
                    .filter(|&f| f > 0);
                match want {
                    Some(f) => prop_assert!(
                        matches!(got, Ok(Attempt::Acquired(Some(t))) if t.get() == f),
                        "{reply:?}"
                    ),
                    None => prop_assert!(matches!(got, Err(Error::UnexpectedReply(_))), "{reply:?}"),
                }
            }
            [Value::Int(0), _] => prop_assert!(matches!(got, Ok(Attempt::Held))),
            _ => prop_assert!(matches!(got, Err(Error::UnexpectedReply(_))), "{reply:?}"),
        }
    }
}
