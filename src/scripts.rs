//! The Lua scripts, loaded from `src/lua/*.lua` (each opens with its
//! contract: KEYS, ARGV, returns). They are sent by SHA1 and fall back to
//! their source when the server answers `NOSCRIPT` (see [`Request::script`]).

use std::sync::LazyLock;

use redis::Value;

use crate::error::{Error, Result};
use crate::request::{Request, Script};

/// Compare-and-delete.
pub(crate) static RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/release.lua")));
/// Compare-and-pexpire.
pub(crate) static EXTEND: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/extend.lua")));
/// Acquire plus fencing token.
pub(crate) static FENCED_ACQUIRE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/fenced_acquire.lua")));
/// Many renewals on one node.
pub(crate) static RENEW_BATCH: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/renew_batch.lua")));

/// `release.lua` for `key` holding `value`.
pub(crate) fn release(key: &[u8], value: &str) -> Request {
    Request::script(&RELEASE, &[key], &[value.as_bytes()])
}

/// `release.lua` for `key` holding any value that starts with `prefix`
/// (a fenced lease whose fence is unknown).
pub(crate) fn release_prefix(key: &[u8], prefix: &str) -> Request {
    Request::script(&RELEASE, &[key], &[prefix.as_bytes(), b"prefix"])
}

/// What `release.lua` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Released {
    /// The key held the value and is now deleted.
    Deleted,
    /// No such key (expired, deleted, or never set).
    Absent,
    /// The key holds another value: untouched.
    Other,
}

/// The reply of `release.lua`.
pub(crate) fn released(replies: &[Value]) -> Result<Released> {
    match replies.first() {
        Some(Value::Int(1)) => Ok(Released::Deleted),
        Some(Value::Int(0)) => Ok(Released::Absent),
        Some(Value::Int(-1)) => Ok(Released::Other),
        other => Err(Error::UnexpectedReply(format!("release: {other:?}"))),
    }
}

/// `extend.lua` for `key` holding `value`, to `ttl_ms` from now.
pub(crate) fn extend(key: &[u8], value: &str, ttl_ms: u64) -> Request {
    Request::script(&EXTEND, &[key], &[value, &ttl_ms.to_string()])
}

/// The reply of a compare-and-act script (`extend`): true when
/// the key held the value and the action was done, false when it did not.
pub(crate) fn compared(replies: &[Value], script: &str) -> Result<bool> {
    match replies.first() {
        Some(Value::Int(1)) => Ok(true),
        Some(Value::Int(0)) => Ok(false),
        other => Err(Error::UnexpectedReply(format!("{script}: {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Release's three answers, and anything else as an error.
    #[test]
    fn release_replies() {
        let one = |v: Value| released(&[v]);
        assert_eq!(one(Value::Int(1)).unwrap(), Released::Deleted);
        assert_eq!(one(Value::Int(0)).unwrap(), Released::Absent);
        assert_eq!(one(Value::Int(-1)).unwrap(), Released::Other);
        for bad in [Value::Int(2), Value::Nil, Value::Okay] {
            assert!(matches!(one(bad), Err(Error::UnexpectedReply(_))));
        }
        assert!(matches!(released(&[]), Err(Error::UnexpectedReply(_))));
    }
}

#[cfg(test)]
#[path = "scripts_props.rs"]
mod props;
