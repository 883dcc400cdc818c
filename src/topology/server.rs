//! What a server says about itself: its version (from `HELLO`) and its
//! identity (`run_id`, from `INFO server`). I/O-free.
//!
//! shardlock needs Redis 7.0 or later: an acquire is `SET … NX PX … GET`
//! (`NX` with `GET` arrived in 7.0) and the slot map comes from `CLUSTER
//! SHARDS` (also 7.0). Every node asked for the slot map is checked first;
//! an older one is refused ([`Error::UnsupportedServer`](crate::Error)).
//!
//! `HELLO` without arguments answers in the connection's protocol without
//! switching it, and any authenticated user may call it, so the check needs
//! no extra ACL rights. Valkey answers with its own version (7.2 and up);
//! servers before 6.0 have no `HELLO` at all.

use redis::Value;

/// The oldest supported server version, `(major, minor)`.
pub(crate) const MIN_VERSION: (u64, u64) = (7, 0);

/// [`MIN_VERSION`] as people write it.
pub(crate) const MIN_VERSION_TEXT: &str = "7.0";

/// The `version` field of a `HELLO` reply (a RESP2 flat array of
/// name/value pairs or a RESP3 map); `None` when it has none.
pub(crate) fn hello_version(reply: &Value) -> Option<String> {
    let field = |name: &Value, value: &Value| -> Option<String> {
        (text(name)?.eq_ignore_ascii_case("version")).then(|| text(value))?
    };
    match reply {
        Value::Array(items) => items
            .chunks_exact(2)
            .find_map(|pair| field(&pair[0], &pair[1])),
        Value::Map(pairs) => pairs.iter().find_map(|(name, value)| field(name, value)),
        _ => None,
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

/// `"7.0.15"` → `(7, 0, 15)`: the leading digits of up to three
/// dot-separated parts (`"7.2.4-rc1"` → `(7, 2, 4)`, `"8"` → `(8, 0, 0)`);
/// `None` when the first part has no leading digit.
pub(crate) fn parse_version(version: &str) -> Option<(u64, u64, u64)> {
    let mut parts = version.trim().split('.').map(|part| {
        let digits = part.bytes().take_while(u8::is_ascii_digit).count();
        part[..digits].parse::<u64>().ok()
    });
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let patch = parts.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

/// Whether a server reporting `version` can serve shardlock: at least
/// [`MIN_VERSION`]. An unparsable version is not supported.
pub(crate) fn is_supported(version: &str) -> bool {
    parse_version(version).is_some_and(|(major, minor, _)| (major, minor) >= MIN_VERSION)
}

/// The value of `name` in an `INFO` reply (`name:value` lines).
pub(crate) fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == name).then(|| value.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    /// Versions parse by their leading digits; 7.0 and later are supported.
    #[test]
    fn versions_table() {
        type Version = Option<(u64, u64, u64)>;
        let table: &[(&str, Version, bool)] = &[
            ("7.0.15", Some((7, 0, 15)), true),
            ("7.0.0", Some((7, 0, 0)), true),
            ("7.2.4", Some((7, 2, 4)), true),
            ("7.4.1", Some((7, 4, 1)), true),
            ("8.0.1", Some((8, 0, 1)), true),
            ("10.1", Some((10, 1, 0)), true),
            ("7.9.240-rc1", Some((7, 9, 240)), true),
            ("6.2.14", Some((6, 2, 14)), false),
            ("6.9.9", Some((6, 9, 9)), false),
            ("5.0.7", Some((5, 0, 7)), false),
            ("6", Some((6, 0, 0)), false),
            ("255.255.255", Some((255, 255, 255)), true),
            ("", None, false),
            ("v7.0.0", None, false),
            ("unknown", None, false),
            ("99999999999999999999999.0", None, false),
        ];
        for (text, parsed, supported) in table {
            assert_eq!(parse_version(text), *parsed, "{text:?}");
            assert_eq!(is_supported(text), *supported, "{text:?}");
        }
    }

    /// The version is found in RESP2 and RESP3 `HELLO` replies (Redis and
    /// Valkey), and is `None` in anything else.
    #[test]
    fn hello_replies() {
        let resp2 = Value::Array(vec![
            bulk("server"),
            bulk("redis"),
            bulk("version"),
            bulk("7.0.15"),
            bulk("proto"),
            Value::Int(2),
            bulk("mode"),
            bulk("cluster"),
            bulk("modules"),
            Value::Array(vec![]),
        ]);
        assert_eq!(hello_version(&resp2).as_deref(), Some("7.0.15"));
        let resp3 = Value::Map(vec![
            (bulk("server"), bulk("valkey")),
            (bulk("version"), bulk("8.0.1")),
        ]);
        assert_eq!(hello_version(&resp3).as_deref(), Some("8.0.1"));
        for other in [
            Value::Nil,
            Value::Okay,
            Value::Array(vec![bulk("version")]),
            Value::Array(vec![bulk("server"), bulk("redis")]),
            Value::Array(vec![bulk("version"), Value::Int(7)]),
        ] {
            assert_eq!(hello_version(&other), None, "{other:?}");
        }
    }

    /// `INFO` fields are found by exact name, CRLF line ends included.
    #[test]
    fn info_fields() {
        let info = "# Server\r\nredis_version:7.0.15\r\nrun_id:abc123\r\nrun_id_x:no\r\n";
        assert_eq!(info_field(info, "run_id"), Some("abc123"));
        assert_eq!(info_field(info, "redis_version"), Some("7.0.15"));
        assert_eq!(info_field(info, "missing"), None);
        assert_eq!(info_field("", "run_id"), None);
    }
}
