//! Turning `CLUSTER SHARDS` and `CLUSTER SLOTS` replies into a [`Topology`].
//!
//! Both parsers accept the RESP2 and the RESP3 shape of the reply (name/value
//! pairs as a flat array or as a map), never panic on any [`Value`], and
//! ignore fields they do not know, so a newer server's additions do not break
//! them. Anything else that is not as documented is a [`TopologyError`].
//!
//! Where a node is: its endpoint field (`CLUSTER SHARDS`) or first element
//! (`CLUSTER SLOTS`) is the host, joined with its port as `host:port`.
//! - An empty or null host means "the host you asked" (Redis sends it when it
//!   does not know its own address, or when told its endpoint is unknown, e.g.
//!   behind a load balancer): the host of `queried` is used.
//! - `?` means the node's address is unknown (hostnames preferred but none
//!   set): the node is left out; a primary's slots stay unassigned.
//! - A `CLUSTER SHARDS` node without an endpoint field uses its `ip`, then its
//!   `hostname`, then `queried`'s host.
//!
//! A slot the reply assigns to two different primaries is an error
//! ([`TopologyError::OverlappingSlots`]), not "last one wins": a refresher
//! then keeps its previous snapshot until the cluster answers consistently.

use redis::Value;

use super::{Node, Topology, TopologyError, UNASSIGNED};
use crate::slot::SLOT_COUNT;

impl Topology {
    /// Parses a `CLUSTER SHARDS` reply (Redis 7.0+) sent by the node at
    /// `queried` ("host:port").
    ///
    /// Each shard's primary is its node with role `master` (or `primary`),
    /// preferring a healthy one; any other primary-role node of that shard
    /// becomes a shard of its own with no slots. Nodes with role `replica` (or
    /// `slave`) are its replicas; nodes with any other role are ignored. A
    /// node is healthy when its `health` is `online` or absent; `fail`,
    /// `failed`, `loading` (and anything else) count as not healthy. A shard
    /// without a usable primary leaves its slots unassigned and its replicas
    /// out.
    pub fn from_cluster_shards(reply: &Value, queried: &str) -> Result<Topology, TopologyError> {
        let mut builder = Builder::new(queried);
        for (shard_number, shard) in top_level(reply, "CLUSTER SHARDS")?.iter().enumerate() {
            let context = format!("CLUSTER SHARDS: shard {shard_number}");
            let (mut slots, mut nodes) = (None, None);
            for (name, value) in fields(shard, &context)? {
                match name {
                    "slots" => slots = Some(value),
                    "nodes" => nodes = Some(value),
                    _ => {}
                }
            }
            let slots = array(required(slots, &context, "slots")?, &context, "slots")?;
            if slots.len() % 2 != 0 {
                return Err(unexpected(format!(
                    "{context}: \"slots\" has {} elements, expected (start, end) pairs",
                    slots.len()
                )));
            }
            let ranges = slots
                .chunks_exact(2)
                .map(|pair| slot_range(&pair[0], &pair[1], &context))
                .collect::<Result<Vec<_>, _>>()?;

            let (mut primaries, mut replicas) = (Vec::new(), Vec::new());
            let nodes = array(required(nodes, &context, "nodes")?, &context, "nodes")?;
            for (node_number, node) in nodes.iter().enumerate() {
                let context = format!("{context}: node {node_number}");
                match shards_node(node, &builder, &context)? {
                    Some((Role::Primary, node)) => primaries.push(node),
                    Some((Role::Replica, node)) => replicas.push(node),
                    None => {}
                }
            }

            let chosen = primaries
                .iter()
                .position(Node::is_healthy)
                .or(if primaries.is_empty() { None } else { Some(0) });
            if let Some(chosen) = chosen {
                let shard = builder.primary(primaries.remove(chosen))?;
                for replica in replicas {
                    builder.replica(shard, replica);
                }
                for range in ranges {
                    builder.assign(shard, range)?;
                }
            }
            for other in primaries {
                builder.primary(other)?;
            }
        }
        builder.finish()
    }

    /// Parses a `CLUSTER SLOTS` reply sent by the node at `queried`
    /// ("host:port").
    ///
    /// Each entry is `[start, end, primary, replica...]`, each node
    /// `[host, port, id?, metadata?]`. Entries with the same primary address
    /// form one shard. The reply says nothing about health (Redis leaves
    /// failed replicas out of it), so every node is healthy, and primaries
    /// without slots do not appear.
    pub fn from_cluster_slots(reply: &Value, queried: &str) -> Result<Topology, TopologyError> {
        let mut builder = Builder::new(queried);
        for (entry_number, entry) in top_level(reply, "CLUSTER SLOTS")?.iter().enumerate() {
            let context = format!("CLUSTER SLOTS: entry {entry_number}");
            let items = array(entry, &context, "the entry")?;
            let [start, end, primary, replicas @ ..] = items else {
                return Err(unexpected(format!(
                    "{context}: has {} elements, expected at least 3 (start, end, primary)",
                    items.len()
                )));
            };
            let range = slot_range(start, end, &context)?;
            let primary = slots_node(primary, &builder, &format!("{context}: primary"))?;
            let replicas = replicas
                .iter()
                .enumerate()
                .map(|(n, replica)| {
                    slots_node(replica, &builder, &format!("{context}: replica {n}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(primary) = primary {
                let shard = builder.primary(primary)?;
                for replica in replicas.into_iter().flatten() {
                    builder.replica(shard, replica);
                }
                builder.assign(shard, range)?;
            }
        }
        builder.finish()
    }
}

/// Collects shards and slot assignments while a reply is read.
struct Builder {
    /// The host part of the address that was queried, for empty endpoints.
    queried_host: String,
    shards: Vec<(Node, Vec<Node>)>,
    slot_shard: Box<[u16]>,
}

impl Builder {
    fn new(queried: &str) -> Builder {
        let host = queried
            .rsplit_once(':')
            .map_or(queried, |(host, _port)| host);
        let host = host
            .strip_prefix('[')
            .and_then(|host| host.strip_suffix(']'))
            .unwrap_or(host);
        Builder {
            queried_host: host.to_owned(),
            shards: Vec::new(),
            slot_shard: vec![UNASSIGNED; usize::from(SLOT_COUNT)].into_boxed_slice(),
        }
    }

    /// The address of a node at `host`, or `None` when it is unusable.
    fn address(&self, host: Host<'_>, port: u16) -> Option<String> {
        let host = match host {
            Host::Named(host) => host,
            Host::SameAsQueried if !self.queried_host.is_empty() => &self.queried_host,
            Host::SameAsQueried | Host::Unknown => return None,
        };
        Some(format!("{host}:{port}"))
    }

    /// The index of the shard whose primary has `primary`'s address, added
    /// if new.
    fn primary(&mut self, primary: Node) -> Result<usize, TopologyError> {
        if let Some(index) = self
            .shards
            .iter()
            .position(|(known, _)| known.addr == primary.addr)
        {
            let known = &mut self.shards[index].0;
            if known.id.is_none() {
                known.id = primary.id;
            }
            return Ok(index);
        }
        if self.shards.len() >= usize::from(UNASSIGNED) {
            return Err(unexpected(format!(
                "more than {} shards",
                usize::from(UNASSIGNED) - 1
            )));
        }
        self.shards.push((primary, Vec::new()));
        Ok(self.shards.len() - 1)
    }

    /// Adds `replica` to shard `shard` unless it is listed there already.
    fn replica(&mut self, shard: usize, replica: Node) {
        let (primary, replicas) = &mut self.shards[shard];
        if primary.addr != replica.addr && replicas.iter().all(|known| known.addr != replica.addr) {
            replicas.push(replica);
        }
    }

    /// Assigns the inclusive slot range to shard `shard`.
    fn assign(&mut self, shard: usize, (start, end): (u16, u16)) -> Result<(), TopologyError> {
        // Fits: `primary` keeps shard indices below UNASSIGNED.
        let index = u16::try_from(shard).unwrap_or(UNASSIGNED);
        for slot in start..=end {
            let entry = &mut self.slot_shard[usize::from(slot)];
            if *entry != UNASSIGNED && *entry != index {
                return Err(TopologyError::OverlappingSlots {
                    slot,
                    first: self.shards[usize::from(*entry)].0.addr.clone(),
                    second: self.shards[shard].0.addr.clone(),
                });
            }
            *entry = index;
        }
        Ok(())
    }

    fn finish(self) -> Result<Topology, TopologyError> {
        if self.slot_shard.iter().all(|&index| index == UNASSIGNED) {
            return Err(TopologyError::EmptyCluster);
        }
        Ok(Topology::assemble(0, false, self.shards, self.slot_shard))
    }
}

/// Where a reply says a node is.
enum Host<'a> {
    Named(&'a str),
    /// Empty or null: the host that was queried.
    SameAsQueried,
    /// `?`: not known; the node cannot be used.
    Unknown,
}

impl<'a> Host<'a> {
    fn from_value(value: &'a Value, context: &str) -> Result<Host<'a>, TopologyError> {
        if matches!(peel(value), Value::Nil) {
            return Ok(Host::SameAsQueried);
        }
        match text(value) {
            Some("") => Ok(Host::SameAsQueried),
            Some("?") => Ok(Host::Unknown),
            Some(host) => Ok(Host::Named(host)),
            None => Err(unexpected(format!(
                "{context}: the host is {}, expected a string",
                kind(value)
            ))),
        }
    }
}

enum Role {
    Primary,
    Replica,
}

/// One node of a `CLUSTER SHARDS` shard; `None` when it is unusable or has a
/// role other than primary or replica.
fn shards_node(
    value: &Value,
    builder: &Builder,
    context: &str,
) -> Result<Option<(Role, Node)>, TopologyError> {
    let (mut id, mut port, mut tls_port, mut ip, mut endpoint, mut hostname, mut role, mut health) =
        (None, None, None, None, None, None, None, None);
    for (name, value) in fields(value, context)? {
        match name {
            "id" => id = Some(value),
            "port" => port = Some(value),
            "tls-port" => tls_port = Some(value),
            "ip" => ip = Some(value),
            "endpoint" => endpoint = Some(value),
            "hostname" => hostname = Some(value),
            "role" => role = Some(value),
            "health" => health = Some(value),
            _ => {}
        }
    }
    let port = port
        .or(tls_port)
        .ok_or_else(|| unexpected(format!("{context}: no \"port\" field")))?;
    let port = port_number(port, context)?;
    let id = optional_text(id, context, "id")?;
    let role = match string(required(role, context, "role")?, context, "role")? {
        "master" | "primary" => Role::Primary,
        "replica" | "slave" => Role::Replica,
        _ => return Ok(None),
    };
    let healthy = match optional_text(health, context, "health")? {
        None => true,
        Some(health) => health == "online",
    };
    let host = match endpoint {
        Some(endpoint) => Host::from_value(endpoint, context)?,
        None => {
            let ip = optional_text(ip, context, "ip")?.filter(|ip| !ip.is_empty());
            let hostname =
                optional_text(hostname, context, "hostname")?.filter(|name| !name.is_empty());
            ip.or(hostname).map_or(Host::SameAsQueried, Host::Named)
        }
    };
    let Some(addr) = builder.address(host, port) else {
        return Ok(None);
    };
    let node =
        Node::new(addr, id.filter(|id| !id.is_empty()).map(str::to_owned)).with_healthy(healthy);
    Ok(Some((role, node)))
}

/// One node of a `CLUSTER SLOTS` entry; `None` when it is unusable.
fn slots_node(
    value: &Value,
    builder: &Builder,
    context: &str,
) -> Result<Option<Node>, TopologyError> {
    let items = array(value, context, "the node")?;
    let [host, port, rest @ ..] = items else {
        return Err(unexpected(format!(
            "{context}: has {} elements, expected at least 2 (host, port)",
            items.len()
        )));
    };
    let host = Host::from_value(host, context)?;
    let port = port_number(port, context)?;
    // rest = [id, metadata]; metadata (hostname, ip) is not needed.
    let id = optional_text(rest.first(), context, "id")?;
    Ok(builder
        .address(host, port)
        .map(|addr| Node::new(addr, id.filter(|id| !id.is_empty()).map(str::to_owned))))
}

/// The reply's top-level array, or why it is not one.
fn top_level<'v>(reply: &'v Value, command: &str) -> Result<&'v [Value], TopologyError> {
    if let Value::ServerError(error) = peel(reply) {
        return Err(unexpected(format!(
            "{command}: the server replied with an error: {error}"
        )));
    }
    array(reply, command, "the reply")
}

/// An inclusive slot range, checked.
fn slot_range(start: &Value, end: &Value, context: &str) -> Result<(u16, u16), TopologyError> {
    let slot = |value: &Value| {
        integer(value)
            .and_then(|n| u16::try_from(n).ok())
            .filter(|&n| n < SLOT_COUNT)
            .ok_or_else(|| {
                unexpected(format!(
                    "{context}: slot {} is not an integer in 0..={}",
                    describe(value),
                    SLOT_COUNT - 1
                ))
            })
    };
    let (start, end) = (slot(start)?, slot(end)?);
    if start > end {
        return Err(unexpected(format!(
            "{context}: slot range {start}-{end} ends before it starts"
        )));
    }
    Ok((start, end))
}

fn port_number(value: &Value, context: &str) -> Result<u16, TopologyError> {
    integer(value)
        .and_then(|n| u16::try_from(n).ok())
        .filter(|&port| port != 0)
        .ok_or_else(|| {
            unexpected(format!(
                "{context}: port {} is not an integer in 1..=65535",
                describe(value)
            ))
        })
}

/// Name/value pairs: a RESP3 map, or a RESP2 flat array of even length.
fn fields<'v>(value: &'v Value, context: &str) -> Result<Vec<(&'v str, &'v Value)>, TopologyError> {
    let name = |key: &'v Value| {
        text(key).ok_or_else(|| {
            unexpected(format!(
                "{context}: a field name is {}, expected a string",
                kind(key)
            ))
        })
    };
    match peel(value) {
        Value::Map(pairs) => pairs
            .iter()
            .map(|(key, value)| Ok((name(key)?, value)))
            .collect(),
        Value::Array(items) if items.len() % 2 == 0 => items
            .chunks_exact(2)
            .map(|pair| Ok((name(&pair[0])?, &pair[1])))
            .collect(),
        Value::Array(items) => Err(unexpected(format!(
            "{context}: {} elements cannot be name/value pairs",
            items.len()
        ))),
        other => Err(unexpected(format!(
            "{context}: is {}, expected a map or an array of name/value pairs",
            kind(other)
        ))),
    }
}

fn required<'v>(
    field: Option<&'v Value>,
    context: &str,
    name: &str,
) -> Result<&'v Value, TopologyError> {
    field.ok_or_else(|| unexpected(format!("{context}: no \"{name}\" field")))
}

fn array<'v>(value: &'v Value, context: &str, what: &str) -> Result<&'v [Value], TopologyError> {
    match peel(value) {
        Value::Array(items) | Value::Set(items) => Ok(items),
        other => Err(unexpected(format!(
            "{context}: {what} is {}, expected an array",
            kind(other)
        ))),
    }
}

fn string<'v>(value: &'v Value, context: &str, name: &str) -> Result<&'v str, TopologyError> {
    text(value).ok_or_else(|| {
        unexpected(format!(
            "{context}: \"{name}\" is {}, expected a string",
            kind(value)
        ))
    })
}

/// A string field that may be absent or null.
fn optional_text<'v>(
    field: Option<&'v Value>,
    context: &str,
    name: &str,
) -> Result<Option<&'v str>, TopologyError> {
    match field {
        None => Ok(None),
        Some(value) if matches!(peel(value), Value::Nil) => Ok(None),
        Some(value) => string(value, context, name).map(Some),
    }
}

/// The value inside any RESP3 attribute wrappers.
fn peel(mut value: &Value) -> &Value {
    while let Value::Attribute { data, .. } = value {
        value = data;
    }
    value
}

fn text(value: &Value) -> Option<&str> {
    match peel(value) {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok(),
        Value::SimpleString(text) | Value::VerbatimString { text, .. } => Some(text),
        _ => None,
    }
}

/// An integer, or a string of one (Redis sometimes sends numbers as strings).
fn integer(value: &Value) -> Option<i64> {
    match peel(value) {
        Value::Int(n) => Some(*n),
        _ => text(value)?.parse().ok(),
    }
}

/// A value for an error message: integers and short strings as themselves,
/// anything else by its kind.
fn describe(value: &Value) -> String {
    match peel(value) {
        Value::Int(n) => n.to_string(),
        _ => match text(value) {
            Some(text) if text.len() <= 40 => format!("{text:?}"),
            _ => kind(value).to_owned(),
        },
    }
}

fn kind(value: &Value) -> &'static str {
    match peel(value) {
        Value::Nil => "nil",
        Value::Int(_) => "an integer",
        Value::BulkString(_) => "a bulk string",
        Value::Array(_) => "an array",
        Value::SimpleString(_) => "a simple string",
        Value::Okay => "OK",
        Value::Map(_) => "a map",
        Value::Set(_) => "a set",
        Value::Double(_) => "a double",
        Value::Boolean(_) => "a boolean",
        Value::VerbatimString { .. } => "a verbatim string",
        Value::BigNumber(_) => "a big number",
        Value::Push { .. } => "a push message",
        Value::ServerError(_) => "an error",
        _ => "an unknown kind of value",
    }
}

fn unexpected(what: String) -> TopologyError {
    TopologyError::UnexpectedReply { what }
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
