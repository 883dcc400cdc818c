//! Property tests of [`compared`]: on any list of replies it never panics,
//! and only a first reply of exactly `1` or `0` is an answer (done / not
//! ours); anything else, an empty list included, is an unexpected reply.

use proptest::prelude::*;
use redis::Value;

use super::*;
use crate::prop_values::{self, config};

proptest! {
    #![proptest_config(config())]

    /// Only the first reply counts, and only `1` and `0` are answers.
    #[test]
    fn only_one_and_zero_are_answers(
        replies in proptest::collection::vec(
            prop_oneof![
                1 => Just(Value::Int(1)),
                1 => Just(Value::Int(0)),
                3 => prop_values::value(),
            ],
            0..4,
        ),
    ) {
        let got = compared(&replies, "release");
        match replies.first() {
            Some(Value::Int(1)) => prop_assert!(matches!(got, Ok(true))),
            Some(Value::Int(0)) => prop_assert!(matches!(got, Ok(false))),
            _ => prop_assert!(matches!(got, Err(Error::UnexpectedReply(_))), "{replies:?}"),
        }
    }
}
