//! Talking to one node with a deadline, and reading what it says.
//!
//! Every connection is fresh and short-lived: a node may have been killed,
//! paused or restarted since the last call, and a cached connection would
//! carry that history into the next question.

use std::net::Ipv4Addr;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Cmd, FromRedisValue, Value};

use super::TestkitError;

/// A connection to one node; every call on it is bounded by a budget.
pub(super) struct Session {
    addr: String,
    conn: MultiplexedConnection,
}

impl Session {
    /// Connects (and authenticates) to `url` within `budget`.
    pub(super) async fn open(
        addr: &str,
        url: &str,
        budget: Duration,
    ) -> Result<Self, TestkitError> {
        let redis_err = |source| TestkitError::Redis {
            addr: addr.to_owned(),
            source,
        };
        let client = redis::Client::open(url).map_err(redis_err)?;
        // Our own timeout is the only one, so a slow node yields `Timeout`.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(None)
            .set_response_timeout(None);
        let connect = client.get_multiplexed_async_connection_with_config(&config);
        match tokio::time::timeout(budget, connect).await {
            Ok(Ok(conn)) => Ok(Session {
                addr: addr.to_owned(),
                conn,
            }),
            Ok(Err(source)) => Err(redis_err(source)),
            Err(_) => Err(TestkitError::Timeout {
                what: format!("{addr} to accept a connection"),
                waited: budget,
            }),
        }
    }

    /// Sends one command and converts the reply; error replies become
    /// [`TestkitError::Redis`].
    pub(super) async fn query<T: FromRedisValue>(
        &mut self,
        cmd: &Cmd,
        budget: Duration,
    ) -> Result<T, TestkitError> {
        match tokio::time::timeout(budget, cmd.query_async::<T>(&mut self.conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(TestkitError::Redis {
                addr: self.addr.clone(),
                source,
            }),
            Err(_) => Err(TestkitError::Timeout {
                what: format!("{} to answer {}", self.addr, command_name(cmd)),
                waited: budget,
            }),
        }
    }
}

/// Connects and sends one command, all within `budget`.
pub(super) async fn query_once<T: FromRedisValue>(
    addr: &str,
    url: &str,
    cmd: &Cmd,
    budget: Duration,
) -> Result<T, TestkitError> {
    let started = tokio::time::Instant::now();
    let mut session = Session::open(addr, url, budget).await?;
    let left = budget.saturating_sub(started.elapsed());
    session.query(cmd, left).await
}

/// `redis://IP:PORT`, or `redis://:PASSWORD@IP:PORT`.
pub(super) fn url(ip: Ipv4Addr, port: u16, password: Option<&str>) -> String {
    match password {
        None => format!("redis://{ip}:{port}"),
        Some(pw) => format!("redis://:{}@{ip}:{port}", percent_encode(pw)),
    }
}

/// Escapes everything but RFC 3986 unreserved characters, so any password
/// survives the URL (the client percent-decodes it).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `GET`, `CLUSTER SETSLOT`, … — enough to say what timed out.
fn command_name(cmd: &Cmd) -> String {
    let mut words = cmd.args_iter().filter_map(|arg| match arg {
        redis::Arg::Simple(bytes) => Some(String::from_utf8_lossy(bytes).to_uppercase()),
        _ => None,
    });
    let first = words.next().unwrap_or_default();
    match (first.as_str(), words.next()) {
        ("CLUSTER" | "CONFIG" | "CLIENT" | "DEBUG", Some(sub)) => format!("{first} {sub}"),
        _ => first,
    }
}

/// The value of `key` in an `INFO` reply (`key:value` lines).
pub(super) fn info_field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines()
        .filter_map(|line| line.trim_end().split_once(':'))
        .find_map(|(k, v)| (k == key).then_some(v))
}

/// A node's own view of its replication, from `INFO replication`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Replication {
    /// `role:master`.
    pub(super) is_primary: bool,
    /// `master_port` when it is a replica.
    pub(super) primary_port: Option<u16>,
    /// `master_link_status:up` when it is a replica.
    pub(super) link_up: bool,
}

impl Replication {
    pub(super) fn parse(info: &str) -> Result<Self, TestkitError> {
        let role = info_field(info, "role").ok_or_else(|| {
            TestkitError::Unexpected(format!("INFO replication without role: {info}"))
        })?;
        Ok(Replication {
            is_primary: role == "master",
            primary_port: info_field(info, "master_port").and_then(|p| p.parse().ok()),
            link_up: info_field(info, "master_link_status") == Some("up"),
        })
    }
}

/// A run of slots `start..=end` served by the primary on `127.0.0.1:port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct SlotRange {
    pub(super) start: u16,
    pub(super) end: u16,
    pub(super) primary_port: u16,
}

/// Total slots in a Redis Cluster.
pub(super) const SLOTS: u32 = 16384;

/// Parses a `CLUSTER SLOTS` reply into sorted, merged ranges, so two nodes
/// that agree produce equal vectors. Nodes are named by port only: every
/// node binds 127.0.0.1, and a node may not know its own IP yet.
pub(super) fn parse_cluster_slots(reply: &Value) -> Result<Vec<SlotRange>, TestkitError> {
    let bad = || TestkitError::Unexpected(format!("CLUSTER SLOTS reply: {reply:?}"));
    let Value::Array(entries) = reply else {
        return Err(bad());
    };
    let mut ranges = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(fields) = entry else {
            return Err(bad());
        };
        let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(primary))) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            return Err(bad());
        };
        let Some(Value::Int(port)) = primary.get(1) else {
            return Err(bad());
        };
        ranges.push(SlotRange {
            start: u16::try_from(*start).map_err(|_| bad())?,
            end: u16::try_from(*end).map_err(|_| bad())?,
            primary_port: u16::try_from(*port).map_err(|_| bad())?,
        });
    }
    ranges.sort();
    let mut merged: Vec<SlotRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(last)
                if last.primary_port == r.primary_port
                    && u32::from(last.end) + 1 == u32::from(r.start) =>
            {
                last.end = r.end;
            }
            _ => merged.push(r),
        }
    }
    Ok(merged)
}

/// Whether the ranges cover every slot exactly once.
pub(super) fn covers_all_slots(ranges: &[SlotRange]) -> bool {
    let mut next = 0u32;
    for r in ranges {
        if u32::from(r.start) != next || r.end < r.start {
            return false;
        }
        next = u32::from(r.end) + 1;
    }
    next == SLOTS
}

/// The port of the primary serving `slot`, if any.
pub(super) fn owner_of(ranges: &[SlotRange], slot: u16) -> Option<u16> {
    ranges
        .iter()
        .find(|r| r.start <= slot && slot <= r.end)
        .map(|r| r.primary_port)
}

/// One line of `CLUSTER NODES`: what the asking node believes about a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NodeLine {
    pub(super) id: String,
    pub(super) port: u16,
    /// `myself`, `master`, `slave`, `fail?`, `fail`, `handshake`, `noaddr`, …
    pub(super) flags: Vec<String>,
    /// The primary's id when this node is a replica.
    pub(super) primary_id: Option<String>,
    /// The cluster-bus link state is `connected`.
    pub(super) connected: bool,
}

impl NodeLine {
    pub(super) fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}

/// Parses `CLUSTER NODES` (`<id> <ip:port@cport[,host]> <flags> <primary>
/// <ping> <pong> <epoch> <link> <slots>...`).
pub(super) fn parse_cluster_nodes(text: &str) -> Result<Vec<NodeLine>, TestkitError> {
    let mut lines = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let bad = || TestkitError::Unexpected(format!("CLUSTER NODES line: {line}"));
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 {
            return Err(bad());
        }
        let host_port = fields[1].split(['@', ',']).next().ok_or_else(bad)?;
        let port = host_port
            .rsplit_once(':')
            .ok_or_else(bad)?
            .1
            .parse()
            .map_err(|_| bad())?;
        lines.push(NodeLine {
            id: fields[0].to_owned(),
            port,
            flags: fields[2].split(',').map(str::to_owned).collect(),
            primary_id: (fields[3] != "-").then(|| fields[3].to_owned()),
            connected: fields[7] == "connected",
        });
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn node(port: i64) -> Value {
        Value::Array(vec![bulk("127.0.0.1"), Value::Int(port), bulk("id")])
    }

    #[test]
    fn cluster_slots_are_sorted_and_merged() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(8192),
                Value::Int(16383),
                node(7001),
                node(7003),
            ]),
            Value::Array(vec![Value::Int(100), Value::Int(8191), node(7000)]),
            Value::Array(vec![Value::Int(0), Value::Int(99), node(7000)]),
        ]);
        let ranges = parse_cluster_slots(&reply).unwrap();
        assert_eq!(
            ranges,
            vec![
                SlotRange {
                    start: 0,
                    end: 8191,
                    primary_port: 7000
                },
                SlotRange {
                    start: 8192,
                    end: 16383,
                    primary_port: 7001
                },
            ]
        );
        assert!(covers_all_slots(&ranges));
        assert_eq!(owner_of(&ranges, 8192), Some(7001));
        assert!(!covers_all_slots(&ranges[..1]));
    }

    #[test]
    fn replication_info_of_a_replica() {
        let info = "# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:7000\r\nmaster_link_status:up\r\n";
        let r = Replication::parse(info).unwrap();
        assert_eq!(
            r,
            Replication {
                is_primary: false,
                primary_port: Some(7000),
                link_up: true
            }
        );
    }

    #[test]
    fn cluster_nodes_lines() {
        let text = "07c3 127.0.0.1:30004@31004 slave e7d1 0 1426238317239 4 connected\n\
                    e7d1 :30001@31001 myself,master - 0 0 1 connected 0-5460\n";
        let nodes = parse_cluster_nodes(text).unwrap();
        assert_eq!(nodes[0].port, 30004);
        assert_eq!(nodes[0].primary_id.as_deref(), Some("e7d1"));
        assert!(nodes[1].has_flag("master") && nodes[1].has_flag("myself"));
        assert_eq!(nodes[1].port, 30001);
        assert!(nodes[1].connected);
    }

    #[test]
    fn passwords_are_escaped_in_urls() {
        assert_eq!(
            url(Ipv4Addr::LOCALHOST, 7000, Some("a b@c")),
            "redis://:a%20b%40c@127.0.0.1:7000"
        );
        assert_eq!(
            url(Ipv4Addr::new(127, 0, 0, 11), 7000, None),
            "redis://127.0.0.11:7000"
        );
    }
}
