//! Property tests of the `CLUSTER SHARDS` / `CLUSTER SLOTS` parsers: on
//! arbitrary RESP2/RESP3 values, on generated replies of the documented
//! shape (with odd fields, roles, hosts and numbers), and on random
//! mutations of the captured replies, neither parser panics, and every
//! topology they return keeps the module's invariants (each slot owned by at
//! most one shard, ranges sorted and merged, at least one slot assigned,
//! shards in canonical order with distinct primaries, replicas sorted,
//! distinct and not their own primary, every address `host:port`). Listing
//! order does not change the result.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use proptest::prelude::*;

use super::*;
use crate::prop_values::{self, config, runner};

/// Everything the module docs promise of a parsed snapshot.
fn check_parsed(topology: &Topology) {
    check_invariants(topology);
    assert!(!topology.is_standalone(), "{topology:?}");
    assert_eq!(topology.version(), 0);
    assert!(
        topology.unassigned_slots() < usize::from(SLOT_COUNT),
        "no slot assigned: {topology:?}"
    );
    let order = |shard: &Shard| {
        let first = shard.slot_ranges().first().map_or(SLOT_COUNT, |r| r.0);
        (first, shard.primary().addr().clone())
    };
    for pair in topology.shards().windows(2) {
        assert!(
            order(&pair[0]) < order(&pair[1]),
            "shards out of order or primaries repeated: {topology:?}"
        );
    }
    let mut primaries: Vec<&str> = topology
        .shards()
        .iter()
        .map(|s| &**s.primary().addr())
        .collect();
    primaries.sort_unstable();
    primaries.dedup();
    assert_eq!(primaries.len(), topology.shards().len(), "{topology:?}");
    for shard in topology.shards() {
        for pair in shard.replicas().windows(2) {
            assert!(pair[0].addr() < pair[1].addr(), "replicas: {topology:?}");
        }
        assert!(
            shard
                .replicas()
                .iter()
                .all(|r| r.addr() != shard.primary().addr()),
            "a primary listed as its own replica: {topology:?}"
        );
    }
    for node in topology.nodes() {
        assert!(node.host_port().is_some(), "{node:?} in {topology:?}");
    }
}

/// Both parsers on `reply`; checks what they return and counts successes.
fn parse_both(reply: &Value, parsed: &AtomicUsize) {
    for topology in [
        Topology::from_cluster_shards(reply, QUERIED),
        Topology::from_cluster_slots(reply, QUERIED),
    ]
    .into_iter()
    .flatten()
    {
        check_parsed(&topology);
        parsed.fetch_add(1, Relaxed);
    }
}

/// Runs `strategy` through both parsers for [`prop_values::CASES`] cases
/// and returns how many parses succeeded.
fn run<S: Strategy<Value = Value>>(strategy: S) -> usize {
    let parsed = AtomicUsize::new(0);
    runner()
        .run(&strategy, |reply| {
            parse_both(&reply, &parsed);
            Ok(())
        })
        .unwrap();
    let parsed = parsed.into_inner();
    println!("{parsed} of {} cases parsed", prop_values::CASES);
    parsed
}

/// One value in forty is replaced by an arbitrary leaf: often enough to
/// reach every error path, rarely enough that most replies still parse.
fn odd(valid: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Value> {
    prop_oneof![40 => valid, 1 => prop_values::leaf()].boxed()
}

/// A slot number as the server sends it (integer), now and then as text or
/// just outside the range.
fn slot_value(n: i64) -> BoxedStrategy<Value> {
    odd(prop_oneof![
        40 => Just(Value::Int(n)),
        1 => Just(b(&n.to_string())),
        1 => Just(Value::Int(n + 16384)),
        1 => Just(Value::Int(-1 - n)),
    ])
}

/// Disjoint slot ranges in order: cut points split `0..=16383` and each
/// piece is a range; now and then a piece is dropped or overlaps the next.
fn ranges() -> BoxedStrategy<Vec<(i64, i64)>> {
    (
        proptest::collection::btree_set(0i64..16384, 1..8),
        proptest::collection::vec(0u8..40, 8),
    )
        .prop_map(|(cuts, fates)| {
            let cuts: Vec<i64> = cuts.into_iter().collect();
            let mut out = Vec::new();
            for (k, &start) in cuts.iter().enumerate() {
                let end = cuts.get(k + 1).map_or(16383, |next| next - 1);
                match fates[k] {
                    0 => {}                                       // unassigned
                    1 => out.push((start, (end + 5).min(16383))), // overlaps
                    2 => out.push((end, start)),                  // reversed
                    _ => out.push((start, end)),
                }
            }
            out
        })
        .boxed()
}

/// A host as the parsers see it: a name, the queried host, empty, `?`,
/// null, or something that is not text.
fn host_value() -> BoxedStrategy<Value> {
    odd(prop_oneof![
        8 => proptest::sample::select(vec![LOCAL, "node3.test", "::1", "10.0.0.1"]).prop_map(b),
        1 => Just(b("")),
        1 => Just(b("?")),
        1 => Just(Value::Nil),
    ])
}

/// A port from a small pool (so nodes repeat), now and then out of range
/// or as text.
fn port_value() -> BoxedStrategy<Value> {
    odd(prop_oneof![
        60 => (7990i64..7998).prop_map(Value::Int),
        1 => (7990i64..7998).prop_map(|p| b(&p.to_string())),
        1 => Just(Value::Int(65536)),
        1 => Just(Value::Int(-1)),
    ])
}

/// Name/value pairs, flat (RESP2) or as a map (RESP3), with a field left
/// out now and then and an unknown field now and then.
fn record(
    resp3: bool,
    fields: Vec<(&'static str, Value)>,
    keep: Vec<bool>,
    extra: Option<Value>,
) -> Value {
    let mut fields: Vec<(&str, Value)> = fields
        .into_iter()
        .zip(keep.into_iter().chain(std::iter::repeat(true)))
        .filter_map(|(field, keep)| keep.then_some(field))
        .collect();
    fields.extend(extra.map(|value| ("x-future-field", value)));
    pairs(resp3, fields)
}

/// A `CLUSTER SHARDS` node of the documented shape, with odd values.
fn shards_node_value(resp3: bool) -> BoxedStrategy<Value> {
    let role = odd(prop_oneof![
        10 => proptest::sample::select(vec!["master", "primary", "replica", "slave"]).prop_map(b),
        1 => proptest::sample::select(vec!["", "arbiter", "MASTER"]).prop_map(b),
    ]);
    let health =
        odd(
            proptest::sample::select(vec!["online", "online", "fail", "failed", "loading"])
                .prop_map(b),
        );
    let id = odd(proptest::sample::select(vec![ID_7991, ID_7992, ID_7993, ""]).prop_map(b));
    (
        (id, port_value(), host_value(), host_value(), host_value()),
        (role, health),
        proptest::collection::vec(proptest::bool::weighted(0.99), 7),
        proptest::option::weighted(0.05, prop_values::value()),
    )
        .prop_map(
            move |((id, port, ip, endpoint, hostname), (role, health), keep, extra)| {
                let fields = vec![
                    ("id", id),
                    ("port", port),
                    ("ip", ip),
                    ("endpoint", endpoint),
                    ("hostname", hostname),
                    ("role", role),
                    ("health", health),
                ];
                record(resp3, fields, keep, extra)
            },
        )
        .boxed()
}

/// A `CLUSTER SHARDS` reply of the documented shape: 1 to 4 shards that
/// share out slot ranges, each with 0 to 3 nodes, RESP2 or RESP3.
fn shards_reply() -> impl Strategy<Value = Value> {
    (any::<bool>(), ranges(), 1usize..5).prop_flat_map(|(resp3, ranges, shard_count)| {
        let slot_values: Vec<(BoxedStrategy<Value>, BoxedStrategy<Value>)> = ranges
            .iter()
            .map(|&(start, end)| (slot_value(start), slot_value(end)))
            .collect();
        let owners = proptest::collection::vec(0..shard_count, ranges.len());
        let shard_bodies = proptest::collection::vec(
            (
                proptest::collection::vec(shards_node_value(resp3), 0..4),
                proptest::collection::vec(proptest::bool::weighted(0.98), 2),
                proptest::option::weighted(0.05, prop_values::value()),
            ),
            shard_count,
        );
        (slot_values, owners, shard_bodies).prop_map(move |(slots, owners, bodies)| {
            let mut shard_slots = vec![Vec::new(); bodies.len()];
            for ((start, end), owner) in slots.into_iter().zip(owners) {
                shard_slots[owner].extend([start, end]);
            }
            let shards = bodies
                .into_iter()
                .zip(shard_slots)
                .map(|((nodes, keep, extra), slots)| {
                    let fields = vec![("slots", arr(slots)), ("nodes", arr(nodes))];
                    record(resp3, fields, keep, extra)
                })
                .collect();
            arr(shards)
        })
    })
}

/// A `CLUSTER SLOTS` node: `[host, port, id?, metadata?]`.
fn slots_node_value() -> BoxedStrategy<Value> {
    let id = odd(proptest::sample::select(vec![ID_7991, ID_7992, ""]).prop_map(b));
    let metadata = prop_oneof![
        Just(arr(vec![])),
        Just(Value::Map(vec![])),
        Just(arr(vec![b("hostname"), b("node3.test")])),
        prop_values::leaf(),
    ];
    (host_value(), port_value(), id, metadata, 0usize..3)
        .prop_map(|(host, port, id, metadata, rest)| {
            let mut items = vec![host, port, id, metadata];
            items.truncate(2 + rest);
            arr(items)
        })
        .boxed()
}

/// A `CLUSTER SLOTS` reply of the documented shape: one
/// `[start, end, primary, replica...]` entry per slot range.
fn slots_reply() -> impl Strategy<Value = Value> {
    ranges().prop_flat_map(|ranges| {
        let entries: Vec<_> = ranges
            .iter()
            .map(|&(start, end)| {
                (
                    slot_value(start),
                    slot_value(end),
                    proptest::collection::vec(slots_node_value(), 1..4),
                    0u8..40,
                )
                    .prop_map(|(start, end, nodes, fate)| {
                        let mut items = vec![start, end];
                        items.extend(nodes);
                        if fate == 0 {
                            items.truncate(2);
                        }
                        arr(items)
                    })
            })
            .collect();
        entries.prop_map(arr)
    })
}

/// The captured replies of both commands.
fn fixtures() -> Vec<Value> {
    vec![
        shards_fresh(false),
        shards_fresh(true),
        shards_reshaped(false),
        shards_reshaped(true),
        shards_failed_over(),
        shards_hostname_preferred(),
        shards_single_node(true),
        slots_fresh(false),
        slots_fresh(true),
        slots_reshaped(true),
        slots_hostname_preferred(),
        slots_unknown_endpoint(),
        slots_single_node(false),
    ]
}

/// `value` with the part at `path` (indices taken modulo each aggregate's
/// length, map entries counting key then value) replaced by `replacement`,
/// or removed from its aggregate when `replacement` is `None`.
fn mutate(value: &Value, path: &[usize], replacement: Option<&Value>) -> Value {
    let Some((&step, rest)) = path.split_first() else {
        return replacement.cloned().unwrap_or(Value::Nil);
    };
    let descend = |item: &Value| mutate(item, rest, replacement);
    match value {
        Value::Array(items) | Value::Set(items) if !items.is_empty() => {
            let mut items = items.clone();
            let k = step % items.len();
            if rest.is_empty() && replacement.is_none() {
                items.remove(k);
            } else {
                items[k] = descend(&items[k]);
            }
            match value {
                Value::Set(_) => Value::Set(items),
                _ => Value::Array(items),
            }
        }
        Value::Map(entries) if !entries.is_empty() => {
            let mut entries = entries.clone();
            let k = (step / 2) % entries.len();
            if rest.is_empty() && replacement.is_none() {
                entries.remove(k);
            } else if step % 2 == 0 {
                entries[k].0 = descend(&entries[k].0);
            } else {
                entries[k].1 = descend(&entries[k].1);
            }
            Value::Map(entries)
        }
        _ => replacement.cloned().unwrap_or(Value::Nil),
    }
}

/// A captured reply with one to three random parts replaced by arbitrary
/// values or removed.
fn mutated_fixture() -> impl Strategy<Value = Value> {
    let edit = (
        proptest::collection::vec(any::<usize>(), 1..7),
        proptest::option::weighted(0.8, prop_values::value()),
    );
    (
        proptest::sample::select(fixtures()),
        proptest::collection::vec(edit, 1..4),
    )
        .prop_map(|(fixture, edits)| {
            edits.iter().fold(fixture, |reply, (path, replacement)| {
                mutate(&reply, path, replacement.as_ref())
            })
        })
}

/// Arbitrary values, nested up to four deep: no panic; any topology parsed
/// keeps the invariants.
#[test]
fn arbitrary_values_never_panic() {
    run(prop_values::value());
}

/// Generated `CLUSTER SHARDS` replies: no panic, invariants hold, and a fair
/// share of them parse (so the invariants are really checked).
#[test]
fn generated_shards_replies_keep_the_invariants() {
    let parsed = run(shards_reply());
    assert!(parsed >= CASE_FLOOR, "only {parsed} parsed");
}

/// Generated `CLUSTER SLOTS` replies: as above.
#[test]
fn generated_slots_replies_keep_the_invariants() {
    let parsed = run(slots_reply());
    assert!(parsed >= CASE_FLOOR, "only {parsed} parsed");
}

/// Random mutations of the captured replies: as above (most mutations
/// break a required part, so the share that parses is smaller).
#[test]
fn mutated_fixtures_keep_the_invariants() {
    let parsed = run(mutated_fixture());
    assert!(parsed >= CASE_FLOOR / 5, "only {parsed} parsed");
}

/// At least this many of a run's parses must succeed for its invariant
/// checks to count.
const CASE_FLOOR: usize = prop_values::CASES as usize / 20;

proptest! {
    #![proptest_config(config())]

    /// The order in which the server lists shards (or entries) and nodes
    /// does not change the snapshot.
    #[test]
    fn listing_order_does_not_matter(
        fixture in proptest::sample::select(fixtures()),
        seed in any::<u64>(),
    ) {
        let mut rng = fastrand::Rng::with_seed(seed);
        let Value::Array(mut entries) = fixture.clone() else { unreachable!() };
        rng.shuffle(&mut entries);
        let shuffled = arr(entries);
        let parse = |reply: &Value| (
            Topology::from_cluster_shards(reply, QUERIED),
            Topology::from_cluster_slots(reply, QUERIED),
        );
        let (shards, slots) = parse(&fixture);
        prop_assert!(shards.is_ok() || slots.is_ok());
        let (shuffled_shards, shuffled_slots) = parse(&shuffled);
        // Errors name the first bad part, which moves with the order.
        prop_assert_eq!(shuffled_shards.ok(), shards.ok());
        prop_assert_eq!(shuffled_slots.ok(), slots.ok());
    }
}
