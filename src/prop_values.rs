//! Property-test generators shared by the parsers' property tests: arbitrary
//! RESP2/RESP3 [`Value`]s, biased towards the words, numbers and shapes the
//! parsers look for so that generated replies reach deep into them.
//!
//! Case counts are fixed here so that the whole property suite fits the CI
//! budget; `PROPTEST_CASES` in the environment does not change them.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use redis::Value;

/// Cases per property: enough to reach every branch of the parsers many
/// times, few enough for a debug build in CI (each property takes well under
/// a few seconds).
pub(crate) const CASES: u32 = 2_000;

/// The runner configuration of every property: [`CASES`] cases, no
/// regression files written into the source tree.
pub(crate) fn config() -> Config {
    Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    }
}

/// A runner with [`config`], for properties that also count their outcomes.
pub(crate) fn runner() -> TestRunner {
    TestRunner::new(config())
}

/// Words the parsers and lock replies look for, and near misses.
const WORDS: &[&str] = &[
    "",
    "?",
    "0",
    "1",
    "-1",
    "16383",
    "16384",
    "7000",
    "65535",
    "65536",
    "slots",
    "nodes",
    "id",
    "port",
    "tls-port",
    "ip",
    "endpoint",
    "hostname",
    "role",
    "master",
    "primary",
    "replica",
    "slave",
    "health",
    "online",
    "fail",
    "failed",
    "loading",
    "127.0.0.1",
    "::1",
    "h",
    "OK",
    "MOVED",
    "ASK",
    "NOSCRIPT",
    "CLUSTERDOWN",
    "ERR",
    "Slots",
    " slots",
    "nodes\0",
];

/// A short byte string: a known word, or arbitrary bytes (invalid UTF-8
/// included).
pub(crate) fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => proptest::sample::select(WORDS).prop_map(|w| w.as_bytes().to_vec()),
        1 => proptest::collection::vec(any::<u8>(), 0..12),
    ]
}

/// A short string: a known word or arbitrary (valid UTF-8) text.
pub(crate) fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(WORDS).prop_map(str::to_owned),
        1 => any::<String>().prop_map(|s| s.chars().take(12).collect()),
    ]
}

/// An integer near the edges that matter (slots, ports, signs) or any.
pub(crate) fn integer() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => -2i64..70_000,
        1 => any::<i64>(),
        1 => proptest::sample::select(vec![i64::MIN, i64::MAX, 16_383, 16_384, 65_535, 65_536]),
    ]
}

/// A RESP frame parsed by redis-rs itself, for the variants whose payload
/// types depend on redis-rs features (big numbers) or have no public
/// constructor (server errors).
fn parsed(frame: String) -> Value {
    redis::parse_redis_value(frame.as_bytes()).unwrap_or(Value::Nil)
}

/// A server error reply (`-CODE detail`), with the codes the router and the
/// lock code look at, and others.
pub(crate) fn server_error() -> BoxedStrategy<Value> {
    let code = prop_oneof![
        3 => proptest::sample::select(vec![
            "MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN", "LOADING", "MASTERDOWN", "READONLY",
            "NOSCRIPT", "WRONGPASS", "NOAUTH", "BUSY", "NOREPLICAS", "ERR", "WRONGTYPE",
            "CROSSSLOT", "EXECABORT",
        ])
        .prop_map(str::to_owned),
        1 => "[A-Z]{1,10}",
    ];
    let detail = prop_oneof![
        Just(String::new()),
        (integer(), text()).prop_map(|(n, a)| format!("{n} {a}")),
        "[ -~]{0,24}",
    ];
    (code, detail)
        .prop_map(|(code, detail)| {
            let line = if detail.is_empty() {
                code
            } else {
                format!("{code} {detail}")
            };
            // A RESP error line cannot hold CR or LF.
            let line: String = line.chars().filter(|c| *c != '\r' && *c != '\n').collect();
            parsed(format!("-{line}\r\n"))
        })
        .boxed()
}

/// Any leaf (non-aggregate) value.
pub(crate) fn leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        2 => Just(Value::Nil),
        1 => Just(Value::Okay),
        4 => integer().prop_map(Value::Int),
        6 => bytes().prop_map(Value::BulkString),
        2 => text().prop_map(Value::SimpleString),
        1 => any::<f64>().prop_map(Value::Double),
        1 => any::<bool>().prop_map(Value::Boolean),
        1 => text().prop_map(|text| Value::VerbatimString {
            format: redis::VerbatimFormat::Text,
            text,
        }),
        1 => integer().prop_map(|n| parsed(format!("({n}\r\n"))),
        1 => server_error(),
    ]
    .boxed()
}

/// Any value: leaves nested in arrays, maps, sets, attributes and pushes,
/// up to four levels deep.
pub(crate) fn value() -> BoxedStrategy<Value> {
    leaf()
        .prop_recursive(4, 64, 8, |inner| {
            let list = proptest::collection::vec(inner.clone(), 0..8);
            let pairs = proptest::collection::vec((inner.clone(), inner.clone()), 0..6);
            prop_oneof![
                4 => list.clone().prop_map(Value::Array),
                2 => pairs.clone().prop_map(Value::Map),
                1 => list.clone().prop_map(Value::Set),
                1 => (inner, pairs).prop_map(|(data, attributes)| Value::Attribute {
                    data: Box::new(data),
                    attributes,
                }),
                1 => list.prop_map(|data| Value::Push {
                    kind: redis::PushKind::Message,
                    data,
                }),
            ]
        })
        .boxed()
}
